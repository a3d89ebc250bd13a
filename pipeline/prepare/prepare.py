"""Decode, convert and resize every usable image into fixed-size uint8 arrays with a stratified split.

Output: the prepared-data format of pipeline.core.prepared; the image arrays are written row by row at
their offsets, so no split is ever held in RAM.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import PrepareConfig
from pipeline.core.console import progress
from pipeline.core.errors import ConfigError, ImageError, InputError
from pipeline.core.dataset import MANIFEST, read_classes, read_manifest, read_source
from pipeline.core.files import write_text
from pipeline.core.images import load
from pipeline.prepare.survey import list_files, probe_all, summarise
from pipeline.core.prepared import INDEX, SKIPPED, SPLITS, images_file, labels_file, write_meta


@dataclass(frozen=True)
class Item:
    rel: str  # path relative to the dataset root, with forward slashes
    cls: str
    split: str  # "train"/"val" when the source fixed it, else ""


@dataclass(frozen=True)
class Prepared:
    out: Path
    classes: list[str]
    input_shape: tuple[int, int, int]
    sizes: dict[str, int]
    skipped: list[tuple[str, str]]  # (path, reason)


def list_items(root: Path) -> tuple[list[Item], list[str], str]:
    """The dataset's items, its class order and a hash identifying the listing.

    A fetched dataset is read from its manifest (rows with status `ok`); any other folder is read as
    one subfolder per class, classes in alphabetical order.
    """
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    manifest = read_manifest(root)
    if manifest is not None:
        ok = manifest[manifest["status"] == "ok"]
        items = [Item(path, cls, split if split in SPLITS else "") for path, cls, split in zip(ok["path"], ok["class"], ok["split"])]
        classes = read_classes(root) or sorted(set(ok["class"]))
        digest = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
        return items, classes, digest
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"no class subfolders in {root}: expected {root}/<class>/<image files>")
    items = [Item(path.relative_to(root).as_posix(), cls, "") for cls in classes for path in list_files(root / cls)]
    listing = "".join(f"{item.rel}\t{(root / item.rel).stat().st_size}\n" for item in items)
    return items, classes, hashlib.sha256(listing.encode()).hexdigest()


def auto_size(most_common: list[int], scale: float) -> tuple[int, int]:
    """Most common shape x scale, rounded half up (seed 000: 375x500 x 1/4 -> 94x125)."""
    if not most_common:
        raise InputError("no readable image to derive the input size from; give --size HxW")
    return tuple(max(1, math.floor(side * scale + 0.5)) for side in most_common)


def _count(size: int | float, n: int) -> int:
    return size if isinstance(size, int) else math.floor(size * n + 0.5)


def _allocate(total: int, weights: list[int], caps: list[int]) -> list[int]:
    """Split `total` over classes in proportion to `weights` (largest remainder), within `caps`."""
    exact = [total * w / sum(weights) for w in weights]
    alloc = [min(math.floor(x), cap) for x, cap in zip(exact, caps)]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    while sum(alloc) < total and any(a < c for a, c in zip(alloc, caps)):
        for i in order:
            if sum(alloc) < total and alloc[i] < caps[i]:
                alloc[i] += 1
    return alloc


def split_items(labels: list[int], fixed: list[str], cfg: PrepareConfig, n_classes: int) -> dict[str, list[int]]:
    """Indices per split: the source's own split when it has one, else a seeded stratified draw."""
    if any(fixed):
        return {split: [i for i, s in enumerate(fixed) if s == split] for split in SPLITS}
    n = len(labels)
    n_train = _count(cfg.train_size, n)
    if isinstance(cfg.train_size, float) and isinstance(cfg.val_size, float):
        n_val = _count(cfg.train_size + cfg.val_size, n) - n_train  # fractions summing to 1 use every image
    else:
        n_val = _count(cfg.val_size, n)
    if n_train + n_val > n:
        raise ConfigError(f"prepare.train_size + prepare.val_size ask for {n_train} + {n_val} images but only {n} are usable")
    members = [[i for i, label in enumerate(labels) if label == c] for c in range(n_classes)]
    sizes = [len(m) for m in members]
    train = _allocate(n_train, sizes, sizes)
    val = _allocate(n_val, sizes, [s - t for s, t in zip(sizes, train)])
    out: dict[str, list[int]] = {split: [] for split in SPLITS}
    for c, idx in enumerate(members):
        perm = np.random.default_rng([cfg.seed, c]).permutation(idx).tolist()
        out["train"] += perm[: train[c]]
        out["val"] += perm[train[c] : train[c] + val[c]]
    return {split: sorted(idx) for split, idx in out.items()}


BATCH = 64  # rows per task: amortises the thread pool's per-task cost (~20 us) over many decodes


def _write_split(
    root: Path, out: Path, split: str, items: list[Item], shapes: list, size: tuple[int, int], cfg: PrepareConfig, channels: int, labels: list[int]
) -> tuple[list[int], list[tuple[str, str]]]:
    """Decode a split straight into a .npy file; drop rows whose decode fails.

    Threads on every core (OpenCV releases the GIL while it decodes), each image written at its
    row's offset with `os.pwrite`: the file's pages stay in the page cache and out of this process,
    so memory does not grow with the dataset. Returns the kept rows (positions in `items`) and the
    (path, reason) of each dropped one.
    """
    path = images_file(out, split)
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(items), *size, channels))
    offset, row_bytes = header.offset, math.prod((*size, channels))
    del header  # the header is written and the file sized; the rows are written below

    def work(rows: range) -> list[str]:
        reasons = []
        for row in rows:
            try:
                img = load((root / items[row].rel).read_bytes(), size, cfg.aspect, cfg.color, shapes[row])
            except ImageError as exc:
                reasons.append(str(exc))
                continue
            os.pwrite(fd, np.ascontiguousarray(img).data, offset + row * row_bytes)
            reasons.append("")
        return reasons

    batches = [range(start, min(start + BATCH, len(items))) for start in range(0, len(items), BATCH)]
    fd = os.open(path, os.O_WRONLY)
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            reasons = [r for batch in progress(pool.map(work, batches), f"Preparing {split}", total=len(batches)) for r in batch]
    finally:
        os.close(fd)
    bad = [row for row, reason in enumerate(reasons) if reason]
    keep = [row for row, reason in enumerate(reasons) if not reason]
    if bad:  # rare: rewrite without the failed rows, a chunk at a time
        arr = np.load(path, mmap_mode="r")
        tmp = out / f".{split}_x.npy.tmp"
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep), *size, channels))
        for start in range(0, len(keep), 256):
            dst[start : start + 256] = arr[keep[start : start + 256]]
        dst.flush()
        del dst, arr
        os.replace(tmp, path)
    np.save(labels_file(out, split), np.asarray([labels[r] for r in keep], dtype=np.int32))
    return keep, [(items[row].rel, reasons[row]) for row in bad]


def prepare(root: Path, out: Path, cfg: PrepareConfig, survey_json: Path | None = None) -> Prepared:
    items, classes, digest = list_items(root)
    unknown = sorted({item.cls for item in items} - set(classes))
    if unknown:
        raise InputError(f"{root}: classes {unknown} are not in the declared classes {classes}")
    shapes = probe_all([root / item.rel for item in items])
    skipped = [(item.rel, "not an image") for item, shape in zip(items, shapes) if shape is None]
    usable = [(item, shape) for item, shape in zip(items, shapes) if shape is not None]
    if not usable:
        raise InputError(f"no readable images under {root}")

    if cfg.size != "auto":
        size = tuple(cfg.size)
    elif survey_json is not None:
        if not survey_json.exists():
            raise InputError(f"survey file not found: {survey_json}")
        size = auto_size(json.loads(survey_json.read_text())["most_common_shape"], cfg.scale)
    else:
        size = auto_size(summarise([shape for _, shape in usable]).most_common_shape, cfg.scale)
    channels = 3 if cfg.color == "rgb" else 1

    labels = [classes.index(item.cls) for item, _ in usable]
    splits = split_items(labels, [item.split for item, _ in usable], cfg, len(classes))
    out.mkdir(parents=True, exist_ok=True)
    sizes, index_rows = {}, []
    for split in SPLITS:
        rows = splits[split]
        keep, bad = _write_split(
            root, out, split, [usable[i][0] for i in rows], [usable[i][1] for i in rows], size, cfg, channels, [labels[i] for i in rows]
        )
        sizes[split] = len(keep)
        skipped += bad
        for new_row, old_row in enumerate(keep):
            item = usable[rows[old_row]][0]
            index_rows.append({"split": split, "row": new_row, "path": item.rel, "class": item.cls, "label": classes.index(item.cls)})
    write_text(out / INDEX, pd.DataFrame(index_rows, columns=["split", "row", "path", "class", "label"]).to_csv(index=False, lineterminator="\n"))
    write_text(out / SKIPPED, pd.DataFrame(sorted(skipped), columns=["path", "reason"]).to_csv(index=False, lineterminator="\n"))
    input_shape = (*size, channels)
    meta = {
        "classes": classes,
        "input_shape": list(input_shape),
        "splits": sizes,
        "aspect": cfg.aspect,
        "color": cfg.color,
        "skipped": len(skipped),
        "source": read_source(root) or "folder",
        "manifest_sha256": digest,
    }
    write_meta(out, meta)
    return Prepared(out, classes, input_shape, sizes, sorted(skipped))
