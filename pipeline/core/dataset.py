"""The fetched-dataset format: what `fetch` writes and `survey-shapes` and `prepare` read.

A folder `<out>/<class>/<file>` with `manifest.csv`, one row per candidate item whatever happened
to it: `status` is `ok`, `duplicate`, `skipped` or `failed`, and `reason` says why for anything but
`ok`; `dataset.json` (the source and its class order: label i = classes[i]); `summary.json` (counts
by status and reason). Any other folder of class subfolders is read as a dataset without a manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.core.errors import InputError

MANIFEST = "manifest.csv"
DATASET = "dataset.json"
SUMMARY = "summary.json"
INCOMPLETE = ".incomplete"  # present while a fetch is writing the folder; removed after the manifest
SIDECARS = {MANIFEST, DATASET, SUMMARY}  # the dataset's own files, not items
COLUMNS = ["url", "path", "class", "split", "status", "reason", "http_status", "bytes", "sha256", "width", "height", "format", "elapsed_ms"]
NUMERIC = ["http_status", "bytes", "width", "height", "elapsed_ms"]


def check_complete(root: Path) -> None:
    """Refuse a folder that a fetch started and did not finish (killed, failed): its files are a
    fraction of the dataset, and reading them as one would give a silently different split."""
    if (root / INCOMPLETE).exists():
        raise InputError(f"{root} is an unfinished fetch (it was interrupted or failed): run `pipeline fetch` again to complete it")


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


def read_source(root: Path) -> str | None:
    """The source that fetched the dataset (dataset.json), or None for a plain folder."""
    path = root / DATASET
    return json.loads(path.read_text()).get("source") if path.exists() else None
