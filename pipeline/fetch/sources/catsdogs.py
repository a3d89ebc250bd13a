"""Kaggle cats vs dogs (seed 000) from Microsoft's zip: `PetImages/Cat` -> `cat`, `PetImages/Dog` -> `dog`.

The archive is downloaded (resumable, optionally SHA-256 pinned) into a download cache that is kept
between runs, `<out>/../downloads/` unless `download_dir` says otherwise, because `dvc repro` deletes
`<out>` before a stage runs and the zip is 787 MiB. With `archive`, a zip already on disk is read
in place and never written to.

Every archive member gets one manifest row (column `origin` holds the member name). Every image
that decodes is kept, whatever its header: TFDS and the Keras example drop the 1,590-1,738 valid
Exif-only JPEGs that lack a `JFIF` marker; we drop only what pipeline.core.images.validate rejects
(the 0-byte `Cat/666.jpg`, the non-image `Dog/11702.jpg`, truncated files...), with the image
checks of `fetch.download` (max_pixels, min_side). Storage and statuses: see
pipeline.fetch.sources.common. Class order is [dog, cat], so cat = label 1 as in seed 000.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.core.errors import InputError
from pipeline.fetch.archives import iter_zip
from pipeline.fetch.http import Client, DownloadError, sha256_file
from pipeline.fetch.manifest import FetchResult, write_manifest
from pipeline.fetch.params import DownloadSettings, FetchParams
from pipeline.fetch.sources import CatsDogsParams
from pipeline.fetch.sources.common import Candidate, download_cache, store_images, system_file

CLASSES = ["dog", "cat"]  # label 0 = dog, 1 = cat (seed 000)
FOLDERS = {"Dog": "dog", "Cat": "cat"}  # PetImages/<folder>/ -> class


def obtain(url: str, archive: str | None, sha256: str | None, cache: Path, download: DownloadSettings) -> Path:
    """The local archive: `archive` (checked, never modified) or `url` downloaded into `cache`."""
    if archive:
        path = Path(archive)
        if not path.is_file():
            raise InputError(f"archive not found: {path}")
        if sha256 and (actual := sha256_file(path)) != sha256:
            raise InputError(f"{path}: SHA-256 mismatch: expected {sha256}, got {actual} (file left as it is)")
        return path
    name = Path(urlsplit(url).path).name
    if name in ("", ".", ".."):
        raise DownloadError(f"{url}: the URL names no file (expected .../<name>.zip)")
    with Client(download, threads=1) as client:
        return client.download(url, cache / name, sha256=sha256 or None)


def class_of(name: str) -> str:
    """`cat`/`dog` for a file directly in `PetImages/Cat` or `PetImages/Dog` (at any depth), else ''."""
    parts = name.split("/")
    return FOLDERS.get(parts[-2], "") if len(parts) >= 3 and parts[-3] == "PetImages" else ""


def candidates(path: Path, params: CatsDogsParams) -> Iterator[Candidate]:
    for entry in iter_zip(path, params.max_member_bytes, params.max_total_bytes):
        cls = class_of(entry.name)
        if entry.problem:
            yield Candidate(entry.name, cls, None, "failed", entry.problem)
        elif system_file(entry.name):
            yield Candidate(
                entry.name, cls, None, "skipped", f"system file, not an image: {entry.name.rsplit('/', 1)[-1]}"
            )
        elif not cls:
            yield Candidate(entry.name, "", None, "skipped", "not in PetImages/Cat or PetImages/Dog")
        else:
            yield Candidate(entry.name, cls, entry.data)


def fetch(out: Path, params: CatsDogsParams, cfg: FetchParams) -> FetchResult:
    """Download (or open) the zip and store every decodable image under `<out>/cat` and `<out>/dog`."""
    path = obtain(params.url, params.archive, params.sha256, download_cache(out, params.download_dir), cfg.download)
    out.mkdir(parents=True, exist_ok=True)
    rows = store_images(out, candidates(path, params), CLASSES, cfg.download, f"Reading {path.name}")
    return write_manifest(out, rows, CLASSES, "cats-dogs")
