"""The per-item table of a fetched dataset (`manifest.csv`) and its companion `dataset.json`.

One row per candidate item, whatever happened to it: `status` is `ok`, `duplicate`, `skipped` or
`failed`, and `reason` says why for anything but `ok`. Rows are sorted so the file is byte-identical
for the same inputs.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.images import EXTENSIONS, validate

MANIFEST = "manifest.csv"
DATASET = "dataset.json"
SUMMARY = "summary.json"
COLUMNS = ["url", "path", "class", "split", "status", "reason", "http_status", "bytes", "sha256", "width", "height", "format", "elapsed_ms"]
NUMERIC = ["http_status", "bytes", "width", "height", "elapsed_ms"]
STATUSES = ("ok", "duplicate", "skipped", "failed")


@dataclass(frozen=True)
class FetchResult:
    out: Path
    classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # rows by status
    reasons: dict[str, int] = field(default_factory=dict)  # rows by reason, for rows not `ok`
    warnings: list[str] = field(default_factory=list)  # e.g. a class short of its requested count


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling and rename, so a crash never leaves a partial file at `path`."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as fh:
        fh.write(data)
    os.replace(fh.name, path)


def reason_kind(reason: str) -> str:
    """The kind of a reason, for counting: "truncated: ... (288 bytes not processed)" -> "truncated"."""
    return "duplicate" if reason.startswith("duplicate of") else reason.split(":", 1)[0]


def store_image(out: Path, cls: str, data: bytes, digest: str, max_pixels: int, min_side: int) -> dict:
    """Validate `data` and write it once to `<cls>/<sha256>.<ext>`: the manifest fields of the stored
    image. Raises ImageError for data that is not a usable image. Shared by every source that stores
    bytes it did not make (downloads, archives, folders)."""
    info = validate(data, max_pixels, min_side)
    rel = f"{cls}/{digest}.{EXTENSIONS[info.format]}"
    dest = out / rel
    if not (dest.is_file() and dest.stat().st_size == len(data)):  # a rerun finds the same content-named file
        write_atomic(dest, data)
    return {"path": rel, "width": info.width, "height": info.height, "format": info.format}


def write_manifest(out: Path, rows: list[dict], classes: list[str], source: str, warnings: list[str] | None = None) -> FetchResult:
    """Write manifest.csv, summary.json and dataset.json (class order: label i = classes[i]).

    Rows are sorted by class, url and path so the file is byte-identical whatever order items
    finished in.
    """
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = ""
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    frame = frame.astype({c: str for c in ("url", "path", "class", "split")}).sort_values(["class", "url", "path"], kind="stable")
    for column in NUMERIC:  # integers stay integers when some rows have none (no "700.0")
        frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce").astype("Int64")
    write_atomic(out / MANIFEST, frame.to_csv(index=False, lineterminator="\n").encode())
    write_atomic(out / DATASET, (json.dumps({"source": source, "classes": classes}, indent=2) + "\n").encode())
    counts = {k: int(v) for k, v in frame["status"].value_counts().sort_index().items()}
    not_ok = frame[frame["status"] != "ok"]
    reasons = {k: int(v) for k, v in not_ok["reason"].map(reason_kind).value_counts().sort_index().items()}
    summary = {"counts": counts, "reasons": reasons, "warnings": warnings or []}
    write_atomic(out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    return FetchResult(out, classes, counts, reasons, warnings or [])


def read_manifest(root: Path) -> pd.DataFrame | None:
    """The manifest of a fetched dataset, or None for a plain folder of class subfolders."""
    path = root / MANIFEST
    if not path.exists():
        return None
    return pd.read_csv(path, dtype={"url": str, "path": str, "class": str, "split": str, "reason": str}, keep_default_na=False)


def read_classes(root: Path) -> list[str] | None:
    """The class order a source declared (e.g. cats-dogs: dog = 0, cat = 1), or None."""
    path = root / DATASET
    return json.loads(path.read_text())["classes"] if path.exists() else None
