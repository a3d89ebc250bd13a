"""The per-item table of a fetched dataset (`manifest.csv`) and its companion `dataset.json`.

One row per candidate item, whatever happened to it: `status` is `ok`, `duplicate`, `skipped` or
`failed`, and `reason` says why for anything but `ok`. Rows are sorted so the file is byte-identical
for the same inputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MANIFEST = "manifest.csv"
DATASET = "dataset.json"
COLUMNS = ["path", "class", "split", "status", "reason", "width", "height", "bytes", "sha256"]
STATUSES = ("ok", "duplicate", "skipped", "failed")


@dataclass(frozen=True)
class FetchResult:
    out: Path
    classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # rows by status


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling and rename, so a crash never leaves a partial file at `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_manifest(out: Path, rows: list[dict], classes: list[str], source: str) -> FetchResult:
    """Write manifest.csv (rows sorted by path) and dataset.json (class order: label i = classes[i])."""
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = ""
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    frame = frame.sort_values("path", kind="stable").reset_index(drop=True)
    write_atomic(out / MANIFEST, frame.to_csv(index=False, lineterminator="\n").encode())
    write_atomic(out / DATASET, (json.dumps({"source": source, "classes": classes}, indent=2) + "\n").encode())
    return FetchResult(out, classes, frame["status"].value_counts().sort_index().to_dict())


def read_manifest(root: Path) -> pd.DataFrame | None:
    """The manifest of a fetched dataset, or None for a plain folder of class subfolders."""
    path = root / MANIFEST
    if not path.exists():
        return None
    return pd.read_csv(path, dtype={"split": str, "reason": str}, keep_default_na=False)


def read_classes(root: Path) -> list[str] | None:
    """The class order a source declared (e.g. cats-dogs: dog = 0, cat = 1), or None."""
    path = root / DATASET
    return json.loads(path.read_text())["classes"] if path.exists() else None
