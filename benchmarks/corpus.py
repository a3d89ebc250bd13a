"""A corpus of realistic JPEGs: cats-vs-dogs sizes (mostly 375x500), quality 75-95, about 30-45 KB."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.core.files import write_atomic
from pipeline.fetch.sources.synthetic import CLASSES, make_image


def make_corpus(root: Path, n: int, seed: int = 1) -> list[Path]:
    """`n` JPEGs in two class folders under `root` (reused if already there)."""
    jobs = [(i % 2, i // 2) for i in range(n)]
    paths = [root / CLASSES[label] / f"{index:05d}.jpg" for label, index in jobs]
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)

    def write(job_path):
        (label, index), path = job_path
        if not path.exists():
            write_atomic(path, make_image(label, index, seed))

    with ThreadPoolExecutor() as pool:
        list(pool.map(write, zip(jobs, paths)))
    return paths
