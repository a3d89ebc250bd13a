"""The prepared-data format: what `prepare` writes and `train`, `evaluate` and `predict` read.

A folder with, per split (train, val), `<split>_x.npy` (N, height, width, channels) uint8 images
and `<split>_y.npy` (N,) int32 labels; `index.csv` (which file went to which row); `skipped.csv`
(files left out, with the reason); and `meta.json`: classes (label i = classes[i]), input_shape,
splits (rows per split), aspect and color (the preprocessing `predict` must repeat), skipped,
source (the fetch source, or `folder`) and manifest_sha256 (the identity of the input listing).

`identity` names the data a model was evaluated on: the source and a fingerprint of exactly these
arrays, so runs on different data are never compared as if they were alike.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.files import write_json

SPLITS = ("train", "val")
META = "meta.json"
INDEX = "index.csv"
SKIPPED = "skipped.csv"


def images_file(data: Path, split: str) -> Path:
    return data / f"{split}_x.npy"


def labels_file(data: Path, split: str) -> Path:
    return data / f"{split}_y.npy"


def read_meta(data: Path) -> dict:
    path = data / META
    if not path.exists():
        raise InputError(f"prepared data not found: {path} (run `pipeline prepare` first)")
    try:
        meta = json.loads(path.read_text())
        meta["classes"], meta["input_shape"], meta["splits"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path} is damaged (not the meta.json `pipeline prepare` writes): run `pipeline prepare` again") from None
    return meta


def write_meta(data: Path, meta: dict) -> None:
    write_json(data / META, meta)


def load_split(data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images memory-mapped (never copied whole into RAM) and labels of one split, refused unless
    they are what meta.json describes (a damaged or mixed folder is never trained on)."""
    meta = read_meta(data)
    expected = (meta["splits"].get(split, -1), *meta["input_shape"])
    try:
        x, y = np.load(images_file(data, split), mmap_mode="r"), np.load(labels_file(data, split))
    except (OSError, ValueError) as exc:
        raise InputError(f"{data}: the {split} arrays cannot be read ({exc}): run `pipeline prepare` again") from None
    if x.shape != expected or x.dtype != np.uint8 or y.shape != expected[:1] or (len(y) and not 0 <= y.min() <= y.max() < len(meta["classes"])):
        raise InputError(f"{data}: the {split} arrays {x.shape} do not match meta.json {expected}: the folder is damaged or mixed; run `pipeline prepare` again")
    return x, y


def fingerprint(data: Path) -> str:
    """SHA-256 of meta.json and the four arrays (streamed): the same value exactly when the images,
    labels, split and preprocessing are the same."""
    read_meta(data)  # (its error when there is no prepared data at all)
    digest = hashlib.sha256()
    for path in [data / META, *(f(data, split) for split in SPLITS for f in (images_file, labels_file))]:
        if not path.exists():
            raise InputError(f"prepared data incomplete: {path} is missing (run `pipeline prepare` again)")
        digest.update(f"{path.name}\0".encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def identity(data: Path) -> dict:
    """What identifies the prepared data: its source, fingerprint, input listing, classes and shape."""
    meta = read_meta(data)
    return {
        "source": meta.get("source", "unknown"),
        "fingerprint": fingerprint(data),
        "manifest_sha256": meta.get("manifest_sha256"),
        "classes": meta["classes"],
        "input_shape": meta["input_shape"],
        "splits": meta["splits"],
    }
