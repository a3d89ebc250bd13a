"""Survey image shapes from file headers (no pixel decoding), as seed 000 did to choose its input size."""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.console import progress
from pipeline.errors import ImageError, InputError
from pipeline.images import probe
from pipeline.manifest import DATASET, MANIFEST, SUMMARY

SIDECARS = {MANIFEST, DATASET, SUMMARY}


@dataclass(frozen=True)
class Survey:
    images: int  # headers read
    unreadable: int
    most_common_shape: list[int]  # [height, width]; [] when no image was readable
    shapes: list[dict]  # {height, width, count}, most frequent first

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector around a loop that makes many small acyclic objects
    (paths, shapes): those trigger full collections that walk every object the imports made, about
    40 ms each, a third of the time of surveying 4,000 files (benchmarks/scaling.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@gc_paused()
def list_files(root: Path) -> list[Path]:
    """Every file under `root` except hidden files and the dataset's own sidecars, sorted."""
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath, name) for name in filenames if not name.startswith(".") and name not in SIDECARS]
    return sorted(files)


def _probe_or_none(path: Path) -> tuple[int, int] | None:
    try:
        return probe(path)
    except ImageError:
        return None


@gc_paused()
def probe_all(paths: list[Path], description: str = "Reading headers") -> list[tuple[int, int] | None]:
    """Header sizes of many files; None for unreadable files.

    Serial on purpose: a header read costs ~10-20 us, less than handing the item to a thread or a
    process (benchmarks/survey.py).
    """
    return [_probe_or_none(path) for path in progress(paths, description, total=len(paths))]


def summarise(sizes: list[tuple[int, int] | None]) -> Survey:
    counts = Counter(size for size in sizes if size is not None)
    # Most frequent first; ties broken by the larger then the wider shape so the order is stable.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], -item[0][0], -item[0][1]))
    shapes = [{"height": h, "width": w, "count": n} for (h, w), n in ranked]
    most_common = [shapes[0]["height"], shapes[0]["width"]] if shapes else []
    return Survey(sum(counts.values()), len(sizes) - sum(counts.values()), most_common, shapes)


def survey_shapes(root: Path, sample: int = 0, seed: int = 0) -> Survey:
    """Read the header of every image under `root`, or of a seeded random `sample` of them."""
    files = list_files(root)
    if 0 < sample < len(files):
        chosen = np.random.default_rng(seed).choice(len(files), size=sample, replace=False)
        files = [files[i] for i in sorted(chosen)]
    return summarise(probe_all(files))


def write_survey(survey: Survey, json_path: Path, csv_path: Path | None = None) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(survey.to_json())
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["height,width,count"] + [f"{s['height']},{s['width']},{s['count']}" for s in survey.shapes]
        csv_path.write_text("\n".join(lines) + "\n")
