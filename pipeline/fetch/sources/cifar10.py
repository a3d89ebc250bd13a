"""CIFAR-10 (seed 003) from the python-version tarball, as `<out>/<class>/<split>-NNNNN.png`.

`cifar-10-python.tar.gz` comes from `url` (default the authors' site) into the download cache
`<out>/../downloads/` (see pipeline.fetch.sources.common.download_cache), checked against its published
SHA-256 (`sha256`; set it to "" or null to skip the check for a mirror that repacked the file;
an unpinned cached tarball is used as it is: delete it to download again). The
tarball is streamed once; each of its batches (`data_batch_1`..`5` -> train, `test_batch` -> val)
is written as 32x32 RGB PNGs, lossless, into the ten class folders, in the classes' official order.
Files are named by batch and index, e.g. `cat/data_batch_1-00042.png` (every image kept: the
standard 50,000/10,000 split survives); `origin` = `<member>#<index>`.

Trust: the batches are Python pickles, the official format. Unpickling untrusted data can run
code, so they are read with an Unpickler that refuses every global except the few numpy needs to
rebuild an array (plus `_codecs.encode`, for pickles written by Python 3 at protocol 2), and the
tarball's SHA-256 is pinned by default. A pickle asking for anything else is an InputError.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError
from pipeline.fetch.archives import iter_tar
from pipeline.fetch.http import Client
from pipeline.fetch.manifest import FetchResult, write_manifest
from pipeline.fetch.params import FetchParams
from pipeline.fetch.sources import Cifar10Params
from pipeline.fetch.sources.common import download_cache, write_split

ARCHIVE = "cifar-10-python.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
SPLITS = {**{name: "train" for name in TRAIN_BATCHES}, "test_batch": "val"}
SIDE = 32
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x names, as in the official files
    ("numpy._core.multiarray", "_reconstruct"),  # numpy 2.x
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def load_batch(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) RGB uint8, labels (N,)) from one batch's pickled bytes."""
    try:
        batch = _NumpyOnly(io.BytesIO(data), encoding="bytes").load()
        pixels = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        OverflowError,
    ) as exc:
        raise InputError(f"{name}: not a CIFAR-10 batch ({type(exc).__name__}: {str(exc)[:120]})") from None
    if pixels.dtype != np.uint8:
        if pixels.dtype.kind not in "iu" or (pixels.size and not 0 <= pixels.min() <= pixels.max() <= 255):
            raise InputError(f"{name}: pixel values are not bytes 0..255 ({pixels.dtype})")
        pixels = pixels.astype(np.uint8)
    if pixels.ndim != 2 or pixels.shape[1] != 3 * SIDE * SIDE or len(labels) != len(pixels):
        raise InputError(
            f"{name}: expected N x {3 * SIDE * SIDE} pixels and N labels, got {pixels.shape} and {len(labels)}"
        )
    if len(labels) and not (0 <= labels.min() and labels.max() < len(CLASSES)):
        raise InputError(f"{name}: labels outside 0..{len(CLASSES) - 1}")
    # Each row holds the red plane, then green, then blue, each 32x32 in row-major order.
    return pixels.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels


def check_meta(name: str, data: bytes) -> None:
    """batches.meta must name the ten classes in the order the labels use."""
    try:
        names = [label.decode() for label in _NumpyOnly(io.BytesIO(data), encoding="bytes").load()[b"label_names"]]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{name}: not CIFAR-10's batches.meta ({type(exc).__name__}: {str(exc)[:120]})") from None
    if names != CLASSES:
        raise InputError(f"{name}: class names {names} are not CIFAR-10's {CLASSES}")


def fetch(out: Path, params: Cifar10Params, cfg: FetchParams) -> FetchResult:
    """Download the tarball (cached, checksummed) and write `<out>/<class>/*.png` plus the manifest."""
    url = params.url + ARCHIVE if params.url.endswith("/") else params.url
    with Client(cfg.download, threads=1) as client:
        path = client.download(url, download_cache(out, params.download_dir) / ARCHIVE, sha256=params.sha256 or None)
    for cls in CLASSES:
        (out / cls).mkdir(parents=True, exist_ok=True)
    rows, seen = [], set()
    for entry in iter_tar(path, params.max_member_bytes, params.max_total_bytes):
        base = entry.name.rsplit("/", 1)[-1]
        if base not in SPLITS and base != "batches.meta":
            continue  # readme.html
        if entry.problem or base in seen:
            raise InputError(f"{path}: member {entry.name}: {entry.problem or 'appears twice'}")
        seen.add(base)
        if base == "batches.meta":
            check_meta(entry.name, entry.data)
        else:
            images, labels = load_batch(entry.name, entry.data)
            rows += write_split(out, SPLITS[base], base, entry.name, images, labels, CLASSES)
    missing = sorted((set(SPLITS) | {"batches.meta"}) - seen)
    if missing:
        raise InputError(f"{path}: not the CIFAR-10 python tarball: missing {', '.join(missing)}")
    return write_manifest(out, rows, CLASSES, "cifar10")
