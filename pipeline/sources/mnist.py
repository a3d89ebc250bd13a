"""MNIST (seeds 002 and 004) from the four IDX gzip files, as `<out>/<digit>/<split>-NNNNN.png`.

The files come from `url` (a base URL; default Google's mirror, which TensorFlow uses) into the
download cache `<out>/../downloads/` (see pipeline.sources.common.download_cache), each checked
against its SHA-256 (`sha256`, defaults: the published files; set `{}` to skip the check for a
mirror that re-compressed them). Images are written as 28x28 grayscale PNGs, lossless, one per
digit class "0".."9"; the original split is kept in the manifest (`train` -> train, `t10k` -> val),
so `pipeline prepare` uses it. Files are named by split and index (not by content, so the standard
60,000/10,000 counts survive), and every image gets a manifest row, `origin` = `<file>#<index>`.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from pipeline.download import DownloadSettings, download_file, make_session
from pipeline.errors import InputError
from pipeline.manifest import FetchResult, write_manifest
from pipeline.sources.common import Sha256, download_cache, write_split

URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
CLASSES = [str(digit) for digit in range(10)]
# (split, images file, labels file); split "val" is MNIST's test set.
FILES = (
    ("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("val", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
)
# SHA-256 of the published files (9,912,422 / 28,881 / 1,648,877 / 4,542 bytes), as pinned by TFDS,
# torchvision's mirrors and others.
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MAX_IDX_BYTES = 200_000_000  # uncompressed; the real train images are 47 MB
IDX_TYPES = {0x08: np.uint8}  # MNIST uses unsigned bytes only


class MnistParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    url: str = URL  # base URL of the four files (a trailing / is added if missing)
    sha256: dict[str, Sha256] = SHA256  # file -> pin; a file not listed is not checked
    download_dir: Optional[str] = None  # download cache [default: <out>/../downloads]

    @field_validator("sha256")
    @classmethod
    def _known_files(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SHA256))
        if unknown:
            raise ValueError(f"unknown file(s) {', '.join(unknown)}; valid: {', '.join(SHA256)}")
        return value


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
        raise InputError(f"{path}: not an IDX file of unsigned bytes with {dims} dimension(s) (magic {raw[:4].hex() or 'missing'})")
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


def fetch(out: Path, params: MnistParams, download: DownloadSettings) -> FetchResult:
    """Download the four files (cached, checksummed) and write `<out>/<digit>/*.png` plus the manifest."""
    cache = download_cache(out, params.download_dir)
    base = params.url if params.url.endswith("/") else params.url + "/"
    with make_session(download) as session:
        paths = {name: download_file(session, base + name, cache / name, download, sha256=params.sha256.get(name) or None)
                 for _, *names in FILES for name in names}
    for cls in CLASSES:
        (out / cls).mkdir(parents=True, exist_ok=True)
    rows = []
    for split, images_file, labels_file in FILES:
        images, labels = read_idx(paths[images_file], 3), read_idx(paths[labels_file], 1)
        check_labels(paths[labels_file], labels, len(CLASSES), len(images))
        rows += write_split(out, split, split, images_file, images, labels, CLASSES)
    return write_manifest(out, rows, CLASSES, "mnist")
