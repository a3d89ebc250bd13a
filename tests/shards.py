"""Test helper: build a fetched dataset in the shard layout (pipeline.core.dataset), and the same
images in the folder layout, without the fetch stage.

Each sample is stored once in a webdataset tar (`<key>.<ext>` + `<key>.json`); every shard gets its
own parquet manifest and a stats file (its done marker); `manifest.parquet` is the final manifest,
rows in shard order. Duplicates are stored in the tars but marked `duplicate` in the final manifest;
skipped and failed rows have no path.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core.dataset import COLUMNS, DATASET, INCOMPLETE, MANIFEST, MANIFEST_DIR, NUMERIC, SHARDS


@dataclass(frozen=True)
class Sample:
    cls: str
    data: bytes
    ext: str  # jpg, png
    split: str = ""  # train, val or "" (prepare draws the split)
    status: str = "success"  # success, duplicate (stored), skipped, failed (not stored)
    reason: str = ""
    height: int = 0
    width: int = 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def encode(img: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(f".{ext}", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def tiny_samples(n: int, classes=("cat", "dog"), seed: int = 0, fixed_split: bool = True) -> list[Sample]:
    """`n` small images (mostly 24x32, some 32x24 and 20x20), PNG and JPEG, each a noise pattern
    brighter for the second class; alternating classes; a fixed split (a quarter val) or none."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        c = i % len(classes)
        h, w = [(24, 32), (24, 32), (24, 32), (32, 24), (20, 20)][i % 5]
        img = (rng.integers(0, 120, (h, w, 3)) + 100 * c).clip(0, 255).astype(np.uint8)
        ext = "png" if i % 3 == 0 else "jpg"
        split = ("val" if i % 8 in (6, 7) else "train") if fixed_split else ""
        samples.append(Sample(classes[c], encode(img, ext), ext, split, height=h, width=w))
    return samples


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in frame.columns.difference(NUMERIC):
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def _row(sample: Sample, path: str, url: str) -> dict:
    return {
        "url": url,
        "key": "",
        "path": path,
        "class": sample.cls,
        "split": sample.split,
        "status": sample.status,
        "error_message": sample.reason,
        "http_status": 200,
        "bytes": len(sample.data),
        "sha256": sample.sha256,
        "dhash": "",  # (none recorded: the hashes are computed where needed)
        "width": sample.width or None,
        "height": sample.height or None,
        "format": {"jpg": "JPEG", "png": "PNG"}.get(sample.ext, ""),
        "elapsed_ms": 1,
    }


def write_shard_dataset(
    root: Path, samples: list[Sample], per_shard: int, classes: list[str] | None = None, source: str = "test"
) -> Path:
    """`samples` in shards of `per_shard` stored items (a skipped/failed sample takes no slot)."""
    classes = classes or sorted({s.cls for s in samples})
    (root / SHARDS).mkdir(parents=True)
    stored = [s for s in samples if s.status in ("success", "duplicate")]
    final = []
    for number, start in enumerate(range(0, len(stored), per_shard)):
        name = f"{number:05d}"
        members, rows = [], []
        for j, sample in enumerate(stored[start : start + per_shard]):
            key = f"{name}{j:04d}"
            meta = {
                "url": f"http://example/{key}",
                "class": sample.cls,
                "sha256": sample.sha256,
                "width": sample.width,
                "height": sample.height,
                "format": sample.ext,
            }
            members += [(f"{key}.{sample.ext}", sample.data), (f"{key}.json", json.dumps(meta).encode())]
            rows.append(_row(sample, f"{SHARDS}/{name}.tar#{key}.{sample.ext}", meta["url"]))
        (root / SHARDS / f"{name}.tar").write_bytes(_tar_bytes(members))
        _frame(rows).to_parquet(root / SHARDS / f"{name}.parquet", index=False)
        (root / SHARDS / f"{name}_stats.json").write_text(json.dumps({"count": len(rows)}))
        final.append(rows)
    final[-1] += [
        _row(s, "", f"http://example/lost{i}")
        for i, s in enumerate(samples)
        if s.status not in ("success", "duplicate")
    ]
    (root / MANIFEST_DIR).mkdir()
    for number, rows in enumerate(final):  # the settled manifest: one file per shard
        _frame(rows).to_parquet(root / MANIFEST_DIR / f"{number:05d}.parquet", index=False)
    (root / DATASET).write_text(json.dumps({"source": source, "classes": classes, "layout": "shards"}))
    return root


def write_folder_dataset(
    root: Path, samples: list[Sample], classes: list[str] | None = None, source: str = "test"
) -> Path:
    """The same samples in the folder layout (`<class>/<nnnnn>.<ext>`, manifest.csv in the same row
    order as the shard layout's final manifest), for comparisons."""
    classes = classes or sorted({s.cls for s in samples})
    rows = []
    for i, sample in enumerate(s for s in samples if s.status == "success"):
        rel = f"{sample.cls}/{i:05d}.{sample.ext}"
        (root / sample.cls).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(sample.data)
        rows.append(_row(sample, rel, f"http://example/{i}"))
    _frame(rows).to_csv(root / MANIFEST, index=False, lineterminator="\n")
    (root / DATASET).write_text(json.dumps({"source": source, "classes": classes}))
    return root


def mark_incomplete(root: Path) -> None:
    (root / INCOMPLETE).write_text("")
