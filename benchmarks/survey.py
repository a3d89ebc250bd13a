"""survey: `pipeline survey-shapes` (header reads) vs seed 000's cv2.imread of every image."""

from __future__ import annotations

from pathlib import Path

import cv2

from benchmarks.corpus import make_corpus
from benchmarks.measure import best_of
from pipeline.prepare.survey import list_files, survey_shapes


def seed_survey(root: Path) -> int:
    return len({cv2.imread(str(path)).shape for path in list_files(root)})


def read_bytes(root: Path) -> int:
    return sum(len(path.read_bytes()) for path in list_files(root))


def ours(root: Path) -> int:
    return survey_shapes(root).images


def run(work: Path, n: int, rounds: int) -> list[dict]:
    root = work.parent / f"corpus-{n}"
    make_corpus(root, n)
    read_bytes(root)  # warm the page cache so every contender reads from memory
    best = best_of(rounds, {"seed": (seed_survey, root), "floor": (read_bytes, root), "ours": (ours, root)})
    baseline, floor, mine = best["seed"], best["floor"], best["ours"]
    assert mine["result"] == n

    def rate(m):
        return n / m["seconds"]

    return [
        {
            "case": "survey",
            "measure": f"seed: cv2.imread every image ({n})",
            "rate": rate(baseline),
            "unit": "images/s",
            "ratio": 1.0,
            "target": "",
            "peak_rss_mb": baseline["peak_rss_mb"],
        },
        {
            "case": "survey",
            "measure": f"read each file's bytes ({n})",
            "rate": rate(floor),
            "unit": "images/s",
            "ratio": 1.0,
            "target": "",
            "peak_rss_mb": floor["peak_rss_mb"],
        },
        {
            "case": "survey",
            "measure": f"pipeline survey-shapes vs seed ({n})",
            "rate": rate(mine),
            "unit": "images/s",
            "ratio": rate(mine) / rate(baseline),
            "target": ">= 20x",
            "peak_rss_mb": mine["peak_rss_mb"],
        },
        {
            "case": "survey",
            "measure": "pipeline survey-shapes vs reading bytes",
            "rate": rate(mine),
            "unit": "images/s",
            "ratio": rate(mine) / rate(floor),
            "target": ">= 0.8",
            "peak_rss_mb": mine["peak_rss_mb"],
        },
    ]
