"""prepare: `pipeline prepare` to 94x125 vs a seed-style cv2 loop and vs Keras' directory loader."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from benchmarks.corpus import make_corpus
from benchmarks.measure import best_of
from benchmarks.survey import read_bytes
from pipeline.core.images import load, probe
from pipeline.prepare.params import PrepareParams
from pipeline.prepare.prepare import prepare
from pipeline.prepare.survey import list_files

SIZE = (94, 125)
GAP = (
    "The bound row is its ceiling here: prepare's own work per image (read, header, libjpeg decode at 1/2 "
    "scale, since 94x125 is just over a quarter of 375x500, then an area resize) on one core, times the "
    "cores. A reduced decode still Huffman-decodes the whole file, which is most of its cost, so one core "
    "does an image in little more than half the seed's time, and two cores cannot reach 4x; more cores can "
    "(the work is split over all of them)."
)


def seed_loop(root: Path) -> int:
    """Seed 000's way: cv2.imread + cv2.resize into a list, one process."""
    images = [cv2.resize(cv2.imread(str(path)), SIZE[::-1]) for path in list_files(root)]
    return len(np.stack(images))


def keras_loader(root: Path) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    ds = keras.utils.image_dataset_from_directory(root, image_size=SIZE, batch_size=256, shuffle=False, verbose=False)
    return sum(int(x.shape[0]) for x, _ in ds)


def one_core(root: Path) -> int:
    """What prepare does per image (read, probe, decode at reduced size, resize), on one core."""
    return sum(load(path.read_bytes(), SIZE, shape=probe(path)).size > 0 for path in list_files(root))


def ours(root: Path, out: Path) -> int:
    result = prepare(root, out, PrepareParams(size=SIZE, train_size=0.8, val_size=0.2))
    return sum(result.sizes.values())


def run(work: Path, n: int, rounds: int) -> list[dict]:
    root = work.parent / f"corpus-{n}"
    make_corpus(root, n)
    read_bytes(root)
    contenders = {
        "seed": (seed_loop, root),
        "keras": (keras_loader, root),
        "one_core": (one_core, root),
        "ours": (ours, root, work / "prepared"),
    }
    best = best_of(rounds, contenders)
    baseline, keras, single, mine = best["seed"], best["keras"], best["one_core"], best["ours"]
    assert mine["result"] == n and keras["result"] == n and single["result"] == n

    def rate(m):
        return n / m["seconds"]

    cores = os.cpu_count()
    bound = rate(single) * cores

    def row(measure_, m, ratio, target):
        return {
            "case": "prepare",
            "measure": measure_,
            "rate": rate(m),
            "unit": "images/s",
            "ratio": ratio,
            "target": target,
            "peak_rss_mb": m["peak_rss_mb"],
        }

    return [
        row(f"seed: cv2.imread + cv2.resize loop ({n})", baseline, 1.0, ""),
        row(f"keras image_dataset_from_directory, iterated once ({n})", keras, 1.0, ""),
        {
            **row(
                f"bound: prepare's per-image work on one core x {cores} cores, vs seed",
                single,
                bound / rate(baseline),
                "",
            ),
            "rate": bound,
        },
        row(f"pipeline prepare to 94x125 vs seed ({n})", mine, rate(mine) / rate(baseline), ">= 4x"),
        row("pipeline prepare vs that bound", mine, rate(mine) / bound, ""),
        row("pipeline prepare vs keras", mine, rate(mine) / rate(keras), ">= 1.3x"),
    ]
