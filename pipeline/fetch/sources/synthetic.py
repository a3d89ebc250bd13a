"""An embedded, offline two-class dataset that reproduces seed 000's finding.

Each image is a cluttered background (a smooth random colour field, random discs, pixel noise) with
one small patch of three parallel bars at a random position and scale: horizontal bars for class
`horizontal` (label 1), vertical for `vertical` (label 0). Colours, positions and scales are drawn
from the same distributions for both classes, so global pixel statistics carry no signal: an MLP on
raw pixels stays near chance while a small CNN, whose 3x3 kernels see edge orientation, learns it.

Image sizes follow the cats-vs-dogs photos: mostly 375x500 (height x width), some 500x375, and a tail
of other sizes. Image i of class c depends only on (seed, c, i), so the output is byte-identical for
the same params and can be generated in any order, in parallel.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.checkpoint import checkpoint
from pipeline.core.console import progress
from pipeline.core.files import write_atomic
from pipeline.core.images import hex_hash, validate
from pipeline.fetch.manifest import FetchResult, write_manifest
from pipeline.fetch.params import FetchParams
from pipeline.fetch.sources import SyntheticParams

CLASSES = ["vertical", "horizontal"]
TAIL_ASPECTS = (0.5625, 0.667, 0.75, 1.0, 1.333)


def _shape(rng: np.random.Generator) -> tuple[int, int]:
    u = rng.random()
    if u < 0.6:
        return 375, 500
    if u < 0.75:
        return 500, 375
    width = int(rng.integers(200, 501))
    return max(150, min(500, int(width * rng.choice(TAIL_ASPECTS)))), width


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def make_image(label: int, index: int, seed: int = 0) -> bytes:
    """The JPEG bytes of image `index` of class `label`."""
    rng = np.random.default_rng([seed, label, index])
    h, w = _shape(rng)
    field = rng.integers(0, 256, (h // 120 + 2, w // 120 + 2, 3), dtype=np.uint8)
    img = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    side = min(h, w)
    for _ in range(int(rng.integers(8, 16))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.uniform(0.03, 0.12) * side), _colour(rng), -1, lineType=cv2.LINE_AA)
    size = int(rng.uniform(0.25, 0.45) * side)
    x0, y0 = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
    colour, step = _colour(rng), size / 7
    for k in (1, 3, 5):  # three bars, each one seventh of the patch thick, with equal gaps
        a, b = int(round(k * step)), int(round((k + 1) * step)) - 1
        if label == 1:
            cv2.rectangle(img, (x0, y0 + a), (x0 + size - 1, y0 + b), colour, -1)
        else:
            cv2.rectangle(img, (x0 + a, y0), (x0 + b, y0 + size - 1), colour, -1)
    noise = rng.integers(-8, 9, img.shape, dtype=np.int16)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])
    assert ok, "OpenCV failed to encode a generated image"
    return buf.tobytes()


def fetch(out: Path, params: SyntheticParams, cfg: FetchParams | None = None) -> FetchResult:
    """Generate `per_class` images per class into `<out>/<class>/NNNNN.jpg` with a manifest.

    `cfg` is unused: nothing comes from the network.
    """
    for name in CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    jobs = [(label, index) for index in range(params.per_class) for label in range(len(CLASSES))]

    def generate(job: tuple[int, int]) -> dict:
        label, index = job
        data = make_image(label, index, params.seed)
        rel = f"{CLASSES[label]}/{index:05d}.jpg"
        write_atomic(out / rel, data)
        info = validate(data)
        return {
            "url": "",
            "path": rel,
            "class": CLASSES[label],
            "split": "",
            "status": "success",
            "error_message": "",
            "http_status": "",
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "dhash": hex_hash(info.dhash),
            "width": info.width,
            "height": info.height,
            "format": "JPEG",
            "elapsed_ms": "",
        }

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = []
        for row in progress(pool.map(generate, jobs), "Generating images", total=len(jobs)):
            rows.append(row)
            checkpoint("fetch.item")
    return write_manifest(out, rows, CLASSES, "synthetic")
