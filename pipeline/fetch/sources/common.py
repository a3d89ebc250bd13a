"""Helpers shared by the archive and folder sources (cats-dogs, mnist, cifar10, folder).

- `download_cache`: where downloaded archives are kept between runs.
- `store_images`: validate image bytes and store them once each under `<out>/<class>/`, for the
  sources that read many files from one place (`cats-dogs` from a zip, `folder` from a directory).
- `write_split`: write decoded arrays (mnist, cifar10) as lossless PNGs with their manifest rows.

Each stored file is named by its content, `<class>/<sha256>.<ext>`, with the extension of the
format found in its magic bytes (a PNG named `.jpg` is stored as `.png`); the bytes are copied
unchanged and written atomically. The same content seen twice is stored once: later copies get
status `duplicate`, the path of the stored file and a reason naming the first copy (archive or
folder order, so the choice is deterministic whatever order the threads finish in).

Statuses: `success`; `duplicate`; `skipped` for anything that is not a usable image (the ImageError
reason from pipeline.core.images.validate, or a reason the source decided, e.g. `Thumbs.db`); `failed`
for an item that could not be read at all (an unsafe or corrupt archive member, an unreadable file).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.checkpoint import checkpoint
from pipeline.core.console import progress
from pipeline.core.errors import ImageError
from pipeline.core.files import write_atomic
from pipeline.core.images import dhash, hex_hash
from pipeline.fetch.manifest import store_image
from pipeline.fetch.params import DownloadSettings

# Names that operating systems scatter into image folders (the PetImages zip has a Thumbs.db per class).
SYSTEM_FILES = {"thumbs.db", "desktop.ini", ".ds_store"}


def download_cache(out: Path, download_dir: str | None) -> Path:
    """Where downloaded archives are kept: `download_dir`, else `downloads/` next to `out`.

    Outside `out` on purpose: `dvc repro` deletes a stage's outputs before it runs, and the archives
    are large (cats-dogs 787 MiB). With the default `--out data/raw/<source>` this is `data/raw/downloads/`.
    """
    return Path(download_dir) if download_dir else out.resolve().parent / "downloads"


@dataclass(frozen=True)
class Candidate:
    origin: str  # where the item came from: the archive member or the path inside the input folder
    cls: str  # its class; "" when it belongs to none
    data: bytes | None  # None when the source already decided it: then `status` and `reason` say why
    status: str = ""
    reason: str = ""


def system_file(name: str) -> bool:
    """Thumbs.db, .DS_Store, desktop.ini, AppleDouble `._x` files and anything under `__MACOSX/`."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.lower() in SYSTEM_FILES or base.startswith("._") or "__MACOSX/" in f"{name}/"


def _row(origin: str, cls: str, status: str, reason: str, **fields) -> dict:
    # Every field in every row: a column with gaps would be written as floats (700.0) by pandas.
    names = ("url", "path", "split", "http_status", "bytes", "sha256", "dhash", "width", "height", "format")
    empty = dict.fromkeys((*names, "elapsed_ms"), "")
    return {**empty, "origin": origin, "class": cls, "status": status, "error_message": reason, **fields}


def _store(out: Path, cand: Candidate, digest: str, settings: DownloadSettings) -> dict:
    """Validate one item and write it to `<class>/<sha256>.<ext>`: its manifest row."""
    try:
        stored = store_image(out, cand.cls, cand.data, digest, settings.max_pixels, settings.min_side)
    except ImageError as exc:
        return _row(cand.origin, cand.cls, "skipped", str(exc), bytes=len(cand.data), sha256=digest)
    return _row(cand.origin, cand.cls, "success", "", bytes=len(cand.data), sha256=digest, **stored)


def store_images(
    out: Path,
    candidates: Iterable[Candidate],
    classes: list[str],
    settings: DownloadSettings,
    description: str,
    total: int | None = None,
) -> list[dict]:
    """One manifest row per candidate, in candidate order; valid images written under `<out>/<class>/`.

    Images are checked with `settings.max_pixels` and `settings.min_side` (`fetch.download`), as
    downloaded ones are.

    Validation and writing run on a thread pool (Pillow's decoder releases the GIL) while the caller's
    iterator reads the next items; at most a few items per thread are held in memory at once.
    Content hashes are computed here, in order, so each distinct content has exactly one writer.
    """
    for cls in classes:
        (out / cls).mkdir(parents=True, exist_ok=True)
    workers = os.cpu_count() or 1
    slots: list[Future | dict | tuple] = []  # a row, a pending row, or (index of the first copy, a later copy)
    first: dict[str, int] = {}
    in_flight: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for cand in progress(candidates, description, total=total):
            checkpoint("fetch.item")
            if cand.data is None:
                slots.append(_row(cand.origin, cand.cls, cand.status, cand.reason))
                continue
            digest = hashlib.sha256(cand.data).hexdigest()
            if digest in first:
                slots.append((first[digest], cand.origin, cand.cls))  # same bytes: keep no copy
                continue
            first[digest] = len(slots)
            future = pool.submit(_store, out, cand, digest, settings)
            slots.append(future)
            in_flight.append(future)
            while len(in_flight) > 4 * workers:  # bound the bytes held by queued items
                in_flight.popleft().result()
    rows: list[dict] = []
    for slot in slots:
        if isinstance(slot, Future):
            rows.append(slot.result())
        elif isinstance(slot, tuple):
            index, origin, cls = slot
            original = rows[index]
            if original["status"] == "success":
                same = {key: original[key] for key in ("path", "bytes", "sha256", "dhash", "width", "height", "format")}
                rows.append(_row(origin, cls, "duplicate", f"duplicate of {original['origin']}", **same))
            else:  # the same bad bytes again: the same verdict
                rows.append({**original, "origin": origin, "class": cls})
        else:
            rows.append(slot)
    return rows


def _write_png(out: Path, rel: str, img: np.ndarray) -> bytes:
    """`img` (grayscale, or RGB) as a lossless PNG at `out/rel`; the PNG bytes."""
    ok, buf = cv2.imencode(".png", img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok, "OpenCV failed to encode a PNG"
    write_atomic(out / rel, buf.tobytes())
    return buf.tobytes()


def write_split(
    out: Path, split: str, stem: str, origin: str, images: np.ndarray, labels: np.ndarray, classes: list[str]
) -> list[dict]:
    """Write image i as `<class>/<stem>-<i>.png` (lossless), with manifest `split`; one row each.

    `images` is (N, height, width) grayscale or (N, height, width, 3) RGB uint8.
    """
    height, width = images.shape[1:3]

    def work(i: int) -> dict:
        cls = classes[labels[i]]
        rel = f"{cls}/{stem}-{i:05d}.png"
        data = _write_png(out, rel, images[i])
        return _row(
            f"{origin}#{i}",
            cls,
            "success",
            "",
            path=rel,
            split=split,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            dhash=hex_hash(dhash(data)),
            width=width,
            height=height,
            format="PNG",
        )

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = []
        for row in progress(pool.map(work, range(len(images))), f"Writing {stem} images", total=len(images)):
            rows.append(row)
            checkpoint("fetch.item")
        return rows
