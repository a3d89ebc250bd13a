"""The prepared-data format: what `prepare` writes and `train`, `evaluate` and `predict` read.

Two layouts, told apart by meta.json's `layout`:

- arrays (no `layout` key; small data, a folder dataset): per split (train, val), `<split>_x.npy`
  (N, height, width, channels) uint8 images and `<split>_y.npy` (N,) int32 labels.
- shards (`"layout": "shards"`; a shard dataset, one output shard per input shard): per shard
  `shards/<NNNNN>-<split>_x.npy` and `shards/<NNNNN>-<split>_y.npy`, the same arrays for that shard's
  rows (all four written, possibly with 0 rows), and meta.json's `shards`: [{"name": "00000",
  "train": rows, "val": rows}, ...] in order. A split is the concatenation of its shard arrays in
  that order; `load_split` returns it as one array-like (`ShardedRows`), read through the memory maps.

Both: `index.csv` (which item went to which row of its split: split, row, path, class, label);
`skipped.csv` (items left out, with the reason); and `meta.json` (written last): classes (label i =
classes[i]), input_shape, splits (rows per split), aspect and color (the preprocessing `predict`
must repeat), skipped, source (the fetch source, or `folder`) and manifest_sha256 (the identity of
the input listing).

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
SHARDS = "shards"  # meta.json's layout value and the folder of the shard arrays


def is_sharded(meta: dict) -> bool:
    return meta.get("layout") == SHARDS


def shard_images_file(data: Path, shard: str, split: str) -> Path:
    return data / SHARDS / f"{shard}-{split}_x.npy"


def shard_labels_file(data: Path, shard: str, split: str) -> Path:
    return data / SHARDS / f"{shard}-{split}_y.npy"


def array_files(data: Path, meta: dict) -> list[Path]:
    """Every array file of the prepared data, in a fixed order (per split: images, labels; shard by
    shard in the shard layout)."""
    if not is_sharded(meta):
        return [f(data, split) for split in SPLITS for f in (images_file, labels_file)]
    return [
        f(data, shard["name"], split)
        for split in SPLITS
        for shard in meta["shards"]
        for f in (shard_images_file, shard_labels_file)
    ]


class ShardedRows:
    """One split of the shard layout read like one uint8 array: the concatenation of its shards'
    memory maps. Supports len, shape, dtype, ndim, an integer, a slice and an integer array (the
    rows gathered shard by shard, in the order asked), and np.asarray. Nothing is loaded whole."""

    def __init__(self, parts: list[np.ndarray], row_shape: tuple[int, ...]):
        self.parts = parts
        self.offsets = np.cumsum([0, *(len(p) for p in parts)])
        self.shape = (int(self.offsets[-1]), *row_shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    @property
    def counts(self) -> list[int]:
        return [len(p) for p in self.parts]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            row = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            shard = int(np.searchsorted(self.offsets, row, side="right")) - 1
            return self.parts[shard][row - self.offsets[shard]]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            pieces = [
                part[max(start - lo, 0) : max(stop - lo, 0)] for part, lo in zip(self.parts, self.offsets[:-1].tolist())
            ]
            return np.concatenate([np.empty((0, *self.shape[1:]), self.dtype), *pieces])  # (copies: a block of rows)
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} rows")
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        shards = np.searchsorted(self.offsets, idx, side="right") - 1
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            out[where] = self.parts[shard][idx[where] - self.offsets[shard]]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


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
        if is_sharded(meta) and not all(isinstance(shard["name"], str) for shard in meta["shards"]):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{path} is damaged (not the meta.json `pipeline prepare` writes): run `pipeline prepare` again"
        ) from None
    return meta


def write_meta(data: Path, meta: dict) -> None:
    write_json(data / META, meta)


def _check(data: Path, split: str, x: np.ndarray, y: np.ndarray, expected: tuple, n_classes: int, what: str) -> None:
    if (
        x.shape != expected
        or x.dtype != np.uint8
        or y.shape != expected[:1]
        or (len(y) and not 0 <= y.min() <= y.max() < n_classes)
    ):
        raise InputError(
            f"{data}: the {what} arrays {x.shape} do not match meta.json {expected}: "
            "the folder is damaged or mixed; run `pipeline prepare` again"
        )


def _load(x_file: Path, y_file: Path, data: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return np.load(x_file, mmap_mode="r"), np.load(y_file)
    except (OSError, ValueError) as exc:
        raise InputError(f"{data}: the {what} arrays cannot be read ({exc}): run `pipeline prepare` again") from None


def load_split(data: Path, split: str) -> tuple[np.ndarray | ShardedRows, np.ndarray]:
    """Images memory-mapped (never copied whole into RAM) and labels of one split, refused unless
    they are what meta.json describes (a damaged or mixed folder is never trained on). In the shard
    layout the images are a `ShardedRows` over the shards' memory maps and the labels are the
    shards' labels concatenated."""
    meta = read_meta(data)
    shape, n_classes = tuple(meta["input_shape"]), len(meta["classes"])
    if not is_sharded(meta):
        x, y = _load(images_file(data, split), labels_file(data, split), data, split)
        _check(data, split, x, y, (meta["splits"].get(split, -1), *shape), n_classes, split)
        return x, y
    parts, labels = [], []
    for shard in meta["shards"]:
        what = f"shard {shard['name']} {split}"
        x, y = _load(
            shard_images_file(data, shard["name"], split), shard_labels_file(data, shard["name"], split), data, what
        )
        _check(data, split, x, y, (shard.get(split, -1), *shape), n_classes, what)
        parts.append(x)
        labels.append(y)
    rows = ShardedRows(parts, shape)
    if len(rows) != meta["splits"].get(split, -1):
        raise InputError(
            f"{data}: the {split} shards hold {len(rows)} rows but meta.json says {meta['splits'].get(split)}: "
            "run `pipeline prepare` again"
        )
    return rows, np.concatenate(labels).astype(np.int32) if labels else np.zeros(0, np.int32)


def fingerprint(data: Path) -> str:
    """SHA-256 of meta.json and the arrays (streamed: the four of the arrays layout, every shard's
    in the shard layout): the same value exactly when the images, labels, split and preprocessing
    are the same."""
    meta = read_meta(data)  # (its error when there is no prepared data at all)
    digest = hashlib.sha256()
    for path in [data / META, *array_files(data, meta)]:
        if not path.exists():
            raise InputError(f"prepared data incomplete: {path} is missing (run `pipeline prepare` again)")
        digest.update(f"{path.relative_to(data).as_posix()}\0".encode())
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
