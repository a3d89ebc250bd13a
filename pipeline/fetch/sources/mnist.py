"""MNIST (seeds 002 and 004) from the four IDX gzip files, as `<out>/<digit>/<split>-NNNNN.png`.

The files come from `url` (a base URL; default Google's mirror, which TensorFlow uses) into the
download cache `<out>/../downloads/` (see pipeline.fetch.sources.common.download_cache), each checked
against its SHA-256 (`sha256`, defaults: the published files; set `{}` to skip the check for a
mirror that re-compressed them). Images are written as 28x28 grayscale PNGs, lossless, one per
digit class "0".."9"; the original split is kept in the manifest (`train` -> train, `t10k` -> val),
so `pipeline prepare` uses it. Files are named by split and index (not by content, so the standard
60,000/10,000 counts survive), and every image gets a manifest row, `origin` = `<file>#<index>`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError
from pipeline.fetch.http import Client
from pipeline.fetch.manifest import FetchResult, write_manifest
from pipeline.fetch.params import FetchParams
from pipeline.fetch.sources import MnistParams
from pipeline.fetch.sources.common import download_cache, write_split

CLASSES = [str(digit) for digit in range(10)]
# (split, images file, labels file); split "val" is MNIST's test set.
FILES = (
    ("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("val", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
)
MAX_IDX_BYTES = 200_000_000  # uncompressed; the real train images are 47 MB
IDX_TYPES = {0x08: np.uint8}  # MNIST uses unsigned bytes only


def read_idx(path: Path, dims: int) -> np.ndarray:
    """A gzipped IDX file as an array of `dims` dimensions; InputError when it is not one."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: not a gzip file ({exc})") from None
    if len(raw) > MAX_IDX_BYTES:
        raise InputError(f"{path}: over {MAX_IDX_BYTES} bytes uncompressed: not an MNIST file")
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES or raw[3] != dims:
        raise InputError(
            f"{path}: not an IDX file of unsigned bytes with {dims} dimension(s) (magic {raw[:4].hex() or 'missing'})"
        )
    header = 4 + 4 * dims
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], ">u4")) if len(raw) >= header else ()
    if len(shape) != dims or len(raw) != header + int(np.prod(shape)):
        raise InputError(f"{path}: IDX header says {shape} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, IDX_TYPES[raw[2]], offset=header).reshape(shape)


def check_labels(path: Path, labels: np.ndarray, n_classes: int, n_images: int) -> None:
    if len(labels) != n_images:
        raise InputError(f"{path}: {len(labels)} labels for {n_images} images")
    if len(labels) and int(labels.max()) >= n_classes:
        raise InputError(f"{path}: label {int(labels.max())} is not one of 0..{n_classes - 1}")


def fetch(out: Path, params: MnistParams, cfg: FetchParams) -> FetchResult:
    """Download the four files (cached, checksummed) and write `<out>/<digit>/*.png` plus the manifest."""
    cache = download_cache(out, params.download_dir)
    base = params.url if params.url.endswith("/") else params.url + "/"
    with Client(cfg.download, threads=1) as client:
        paths = {
            name: client.download(base + name, cache / name, sha256=params.sha256.get(name) or None)
            for _, *names in FILES
            for name in names
        }
    for cls in CLASSES:
        (out / cls).mkdir(parents=True, exist_ok=True)
    rows = []
    for split, images_file, labels_file in FILES:
        images, labels = read_idx(paths[images_file], 3), read_idx(paths[labels_file], 1)
        check_labels(paths[labels_file], labels, len(CLASSES), len(images))
        rows += write_split(out, split, split, images_file, images, labels, CLASSES)
    return write_manifest(out, rows, CLASSES, "mnist")
