"""Decode, convert and resize every usable image into fixed-size uint8 arrays with a stratified split.

Output: the prepared-data format of pipeline.core.prepared; the image arrays are written row by row at
their offsets, so no split is ever held in RAM. A folder dataset is prepared here, in this process,
into the arrays layout; a shard dataset by `pipeline.prepare.sharded`, one task per shard, into the
shard layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from pipeline.core.config import MAX_SIDE, PrepareConfig
from pipeline.core.console import progress
from pipeline.core.dataset import MANIFEST, check_complete, layout, read_classes, read_manifest, read_source
from pipeline.core.errors import ConfigError, DataError, ImageError, InputError
from pipeline.core.files import exclusive, printable, read_capped, staged_dir, walk, write_text
from pipeline.core.images import load
from pipeline.core.prepared import INDEX, SKIPPED, SPLITS, images_file, labels_file, write_meta
from pipeline.prepare.survey import probe_all, summarise


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
    warnings: list[str] = field(default_factory=list)  # e.g. most files skipped


def list_items(root: Path) -> tuple[list[Item], list[str], str, list[tuple[str, str]]]:
    """The dataset's items, its class order, a hash identifying the listing, and the entries left
    out with their reason.

    A fetched dataset is read from its manifest (rows with status `ok`); any other folder is read as
    one subfolder per class, classes in alphabetical order. Either way nothing outside `root` is
    read: symbolic links are not followed and manifest paths must stay inside.
    """
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    check_complete(root)
    manifest = read_manifest(root)
    if manifest is not None:
        ok = manifest[manifest["status"] == "ok"]
        inside = [
            not PurePosixPath(path).is_absolute() and ".." not in PurePosixPath(path).parts for path in ok["path"]
        ]
        items = [
            Item(path, cls, split if split in SPLITS else "")
            for path, cls, split, keep in zip(ok["path"], ok["class"], ok["split"], inside)
            if keep
        ]
        outside = [(path, "path outside the dataset folder") for path, keep in zip(ok["path"], inside) if not keep]
        classes = read_classes(root) or sorted(set(ok["class"]))
        digest = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
        return items, classes, digest, outside
    folders = sorted(d for d in root.iterdir() if not d.name.startswith(".") and not d.is_symlink() and d.is_dir())
    if not folders:
        raise InputError(f"no class subfolders in {root}: expected {root}/<class>/<image files>")
    items, others = [], []
    for folder in folders:
        files, rest = walk(folder)
        items += [Item(path.relative_to(root).as_posix(), folder.name, "") for path in files]
        others += [(path.relative_to(root).as_posix(), reason) for path, reason in rest]
    listing = "".join(f"{printable(item.rel)}\t{(root / item.rel).stat().st_size}\n" for item in items)
    return items, [d.name for d in folders], hashlib.sha256(listing.encode()).hexdigest(), others


def auto_size(most_common: list[int], scale: float) -> tuple[int, int]:
    """Most common shape x scale, rounded half up (seed 000: 375x500 x 1/4 -> 94x125)."""
    if not most_common:
        raise InputError("no readable image to derive the input size from; give --size HxW")
    return tuple(max(1, math.floor(side * scale + 0.5)) for side in most_common)


def input_size(
    cfg: PrepareConfig, survey_json: Path | None, shapes: Callable[[], list[tuple[int, int]]]
) -> tuple[int, int]:
    """prepare.size, or the survey's most common shape x prepare.scale, or else that of `shapes()`
    (the usable images' shapes, asked for only then)."""
    if cfg.size != "auto":
        size = tuple(cfg.size)
    elif survey_json is not None:
        size = auto_size(read_survey_shape(survey_json), cfg.scale)
    else:
        size = auto_size(summarise(shapes()).most_common_shape, cfg.scale)
    if max(size) > MAX_SIDE:
        raise ConfigError(
            f"prepare: input size {size[0]}x{size[1]} exceeds {MAX_SIDE} pixels a side; lower prepare.scale or set prepare.size"
        )
    return size


def check_splits(splits: dict[str, list[int]], labels: list[int]) -> None:
    """Each split needs images of two classes at least."""
    for split, rows in splits.items():
        present = {labels[i] for i in rows}
        if len(present) < 2:
            raise DataError(
                f"the {split} split has images of {len(present)} class(es) only; each split needs at least two (check prepare.{split}_size and the data)"
            )


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
        raise ConfigError(
            f"prepare.train_size + prepare.val_size ask for {n_train} + {n_val} images but only {n} are usable"
        )
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
    root: Path,
    out: Path,
    split: str,
    items: list[Item],
    shapes: list,
    size: tuple[int, int],
    cfg: PrepareConfig,
    channels: int,
    labels: list[int],
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
                img = load(
                    read_capped(root / items[row].rel, cfg.max_file_bytes), size, cfg.aspect, cfg.color, shapes[row]
                )
            except ImageError as exc:
                reasons.append(str(exc))
                continue
            try:
                os.pwrite(fd, np.ascontiguousarray(img).data, offset + row * row_bytes)
            except OSError as exc:  # name the file the user must make room for
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            reasons.append("")
        return reasons

    batches = [range(start, min(start + BATCH, len(items))) for start in range(0, len(items), BATCH)]
    fd = os.open(path, os.O_WRONLY)
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            reasons = [
                r
                for batch in progress(pool.map(work, batches), f"Preparing {split}", total=len(batches))
                for r in batch
            ]
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
    """The prepare stage: every usable image of `root` into the prepared-data format in `out`.

    The whole output is built in a temporary folder beside `out` and swapped in when complete, by
    one writer at a time: a kill, a full disk or a second run never leaves arrays that a later
    stage would trust next to metadata that does not describe them.
    """
    src, dst = root.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise ConfigError(
            f"--out {out} is inside --in {root}: the next run would read the output as a class; choose a folder outside it"
        )
    if root.is_dir():
        check_complete(root)
        if layout(root) == "shards":  # one task per shard on prepare.engine
            from pipeline.prepare.sharded import prepare_shards

            return prepare_shards(root, out, cfg, survey_json)
    items, classes, digest, skipped = list_items(root)
    unknown = sorted({item.cls for item in items} - set(classes))
    if unknown:
        raise InputError(f"{root}: classes {unknown} are not in the declared classes {classes}")
    if len(classes) < 2:
        raise DataError(
            f"{root}: {len(classes)} class ({', '.join(classes)}); a classifier needs at least two class subfolders"
        )
    shapes = probe_all([root / item.rel for item in items])
    for item, shape in zip(items, shapes):
        if shape is None:
            skipped.append((item.rel, "not an image"))
        elif shape[0] * shape[1] > cfg.max_pixels:
            skipped.append((item.rel, f"too many pixels: {shape[1]}x{shape[0]} > prepare.max_pixels {cfg.max_pixels}"))
    usable = [
        (item, shape)
        for item, shape in zip(items, shapes)
        if shape is not None and shape[0] * shape[1] <= cfg.max_pixels
    ]
    if not usable:
        raise DataError(f"no usable image under {root} ({len(skipped)} skipped{_top_reasons(skipped)})")

    size = input_size(cfg, survey_json, lambda: [shape for _, shape in usable])
    channels = 3 if cfg.color == "rgb" else 1

    labels = [classes.index(item.cls) for item, _ in usable]
    splits = split_items(labels, [item.split for item, _ in usable], cfg, len(classes))
    check_splits(splits, labels)
    _check_space(out, sum(map(len, splits.values())) * math.prod((*size, channels)))

    with exclusive(out, "prepare"), staged_dir(out) as tmp:
        sizes, index_rows = {}, []
        for split in SPLITS:
            rows = splits[split]
            keep, bad = _write_split(
                root,
                tmp,
                split,
                [usable[i][0] for i in rows],
                [usable[i][1] for i in rows],
                size,
                cfg,
                channels,
                [labels[i] for i in rows],
            )
            sizes[split] = len(keep)
            skipped += bad
            for new_row, old_row in enumerate(keep):
                item = usable[rows[old_row]][0]
                index_rows.append(
                    {
                        "split": split,
                        "row": new_row,
                        "path": printable(item.rel),
                        "class": item.cls,
                        "label": classes.index(item.cls),
                    }
                )
        skipped = sorted((printable(path), reason) for path, reason in skipped)
        input_shape = (*size, channels)
        write_listing(tmp, index_rows, skipped, classes, input_shape, sizes, cfg, read_source(root) or "folder", digest)
    kept = sum(sizes.values())
    warnings = (
        [
            f"most files were skipped, {len(skipped)} of {len(skipped) + kept}{_top_reasons(skipped)} (see {out / SKIPPED})"
        ]
        if len(skipped) > kept
        else []
    )
    return Prepared(out, classes, input_shape, sizes, skipped, warnings)


def write_listing(
    out: Path,
    index_rows: list[dict],
    skipped: list[tuple[str, str]],
    classes: list[str],
    input_shape: tuple,
    sizes: dict,
    cfg: PrepareConfig,
    source: str,
    digest: str,
    **extra,
) -> None:
    """index.csv, skipped.csv and, last (the folder is then complete), meta.json: for either layout."""
    write_text(
        out / INDEX,
        pd.DataFrame(index_rows, columns=["split", "row", "path", "class", "label"]).to_csv(
            index=False, lineterminator="\n"
        ),
    )
    write_text(
        out / SKIPPED, pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(index=False, lineterminator="\n")
    )
    meta = {
        "classes": classes,
        "input_shape": list(input_shape),
        "splits": sizes,
        "aspect": cfg.aspect,
        "color": cfg.color,
        "skipped": len(skipped),
        "source": source,
        "manifest_sha256": digest,
        **extra,
    }
    write_meta(out, meta)


def _top_reasons(skipped: list[tuple[str, str]], top: int = 3) -> str:
    """': 120 too small, 3 not an image' -- the commonest reasons, by kind."""
    counts = Counter(reason.split(":", 1)[0] for _, reason in skipped)
    return (": " + ", ".join(f"{n} {kind}" for kind, n in counts.most_common(top))) if counts else ""


def read_survey_shape(path: Path) -> list[int]:
    """The most common [height, width] of a survey file, checked before use."""
    try:
        shape = json.loads(path.read_text())["most_common_shape"]
    except FileNotFoundError:
        raise InputError(f"survey file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is not a survey (run `pipeline survey-shapes --out {path}`): {type(exc).__name__}"
        ) from None
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise InputError(f"{path}: most_common_shape should be [height, width] of positive integers, got {shape!r}")
    return shape


def _check_space(out: Path, needed: int) -> None:
    """Refuse before writing when the arrays cannot fit (instead of a full disk half way)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise DataError(
            f"the prepared arrays need {needed / 1e9:.1f} GB but {out.parent} has {free / 1e9:.1f} GB free; lower prepare.size or prepare.scale, or free space"
        )
