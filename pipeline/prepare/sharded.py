"""Prepare a shard-layout dataset: one task per input shard, on `prepare.engine`.

The parent settles everything global first, from the final manifest alone: the items (its `ok`
rows), the class order, the input size (prepare.size, the survey, or the manifest's image sizes) and
the split (the manifest's, else the same seeded stratified draw as a folder). Each task
(`prepare_shard`, a top-level function: the local process pool and Dask pickle it by reference)
streams its tar once, decodes and resizes its items with `pipeline.core.images.load` (the function
`prepare` and `predict` share), and writes its arrays into the staged output folder under temporary
names, renamed when complete. The parent writes index.csv, skipped.csv and, last, meta.json.

Outputs are the same bytes whatever the engine and worker count: a task's rows follow the manifest's
order, and the shards are listed in name order. A rerun after a kill rebuilds everything (the staged
folder of the killed run is deleted, as for a folder dataset). Items that fail to decode are dropped
from their split with the reason, as in the arrays layout; so the split is drawn over the manifest's
`ok` rows, which fetch has already decoded once.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import PrepareConfig
from pipeline.core.console import progress
from pipeline.core.dataset import (
    iter_shard_images,
    manifest_files,
    member_path,
    read_classes,
    read_source,
    stored_items,
)
from pipeline.core.engine import map_shards
from pipeline.core.errors import DataError, ImageError, InputError
from pipeline.core.files import atomic_file, exclusive, printable, staged_dir
from pipeline.core.images import load, probe
from pipeline.core.prepared import SHARDS, SKIPPED, SPLITS, shard_images_file, shard_labels_file
from pipeline.prepare.prepare import (
    Prepared,
    _check_space,
    _top_reasons,
    check_splits,
    input_size,
    split_items,
    write_listing,
)
from pipeline.prepare.survey import probe_shards


@dataclass(frozen=True)
class ShardTask:
    """One input shard's work: its items (in manifest order) that go to a split."""

    root: Path
    out: Path  # the staged output folder
    shard: str
    members: tuple[str, ...]
    labels: tuple[int, ...]
    splits: tuple[str, ...]  # "train" or "val" per member
    size: tuple[int, int]
    aspect: str
    color: str
    max_pixels: int
    max_file_bytes: int


@dataclass(frozen=True)
class ShardResult:
    shard: str
    kept: dict[str, list[int]]  # per split, the positions in `members` of its rows, in row order
    skipped: list[tuple[str, str]]  # (member, reason)


def _decode(data: bytes | ImageError, task: ShardTask) -> np.ndarray | str:
    """The prepared image, or the reason it cannot be (the folder layout's reasons)."""
    if isinstance(data, ImageError):
        return str(data)
    try:
        shape = probe(data)
    except ImageError:
        return "not an image"
    if shape[0] * shape[1] > task.max_pixels:
        return f"too many pixels: {shape[1]}x{shape[0]} > prepare.max_pixels {task.max_pixels}"
    try:
        return load(data, task.size, task.aspect, task.color, shape)
    except ImageError as exc:
        return str(exc)


def prepare_shard(task: ShardTask) -> ShardResult:
    """Decode one shard's items into `<out>/shards/<shard>-<split>_{x,y}.npy` (see the module docstring)."""
    import cv2

    cv2.setNumThreads(1)  # one task per core already: OpenCV's own threads would only compete
    channels = 3 if task.color == "rgb" else 1
    rows = {split: [i for i, s in enumerate(task.splits) if s == split] for split in SPLITS}
    slot = {i: (split, r) for split in SPLITS for r, i in enumerate(rows[split])}
    where = {member: i for i, member in enumerate(task.members)}
    tmp = {split: task.out / SHARDS / f".{task.shard}-{split}_x.npy.tmp" for split in SPLITS}
    arrays = {
        split: np.lib.format.open_memmap(
            tmp[split], mode="w+", dtype=np.uint8, shape=(len(rows[split]), *task.size, channels)
        )
        for split in SPLITS
    }
    reasons: dict[int, str] = {}
    for member, data in iter_shard_images(task.root, task.shard, task.max_file_bytes, set(where)):
        i = where[member]
        if i in reasons:
            continue  # a name twice in one tar: the first is the item
        img = _decode(data, task)
        if isinstance(img, str):
            reasons[i] = img
            continue
        split, row = slot[i]
        arrays[split][row] = img
        reasons[i] = ""
    for i in range(len(task.members)):
        reasons.setdefault(i, "missing from its shard")
    kept = {}
    for split in SPLITS:
        arrays[split].flush()
        keep = [r for r, i in enumerate(rows[split]) if not reasons[rows[split][r]]]
        del arrays[split]
        _finish(tmp[split], shard_images_file(task.out, task.shard, split), keep, len(rows[split]))
        with atomic_file(shard_labels_file(task.out, task.shard, split)) as fh:
            np.save(fh, np.asarray([task.labels[rows[split][r]] for r in keep], dtype=np.int32))
        kept[split] = [rows[split][r] for r in keep]
    skipped = [(task.members[i], reason) for i, reason in sorted(reasons.items()) if reason]
    return ShardResult(task.shard, kept, skipped)


def _finish(tmp: Path, final: Path, keep: list[int], n: int) -> None:
    """Rename the written array into place, without the rows that failed (rare: copied a chunk at a time)."""
    if len(keep) == n:
        os.replace(tmp, final)
        return
    src = np.load(tmp, mmap_mode="r")
    compact = tmp.with_name(tmp.name + "2")
    dst = np.lib.format.open_memmap(compact, mode="w+", dtype=np.uint8, shape=(len(keep), *src.shape[1:]))
    for start in range(0, len(keep), 256):
        dst[start : start + 256] = src[keep[start : start + 256]]
    dst.flush()
    del dst, src
    os.replace(compact, final)
    tmp.unlink()


def _manifest_sha256(root: Path) -> str:
    """The identity of the input listing: the settled manifest files, hashed in shard order."""
    digest = hashlib.sha256()
    for path in manifest_files(root):
        digest.update(f"{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _manifest_shapes(root: Path, items: pd.DataFrame, cfg: PrepareConfig) -> list[tuple[int, int]]:
    """The usable items' (height, width) for --size auto: the manifest's (fetch measured them), or
    read from the tars when it lacks any."""
    heights, widths = pd.to_numeric(items["height"], errors="coerce"), pd.to_numeric(items["width"], errors="coerce")
    if heights.isna().any() or widths.isna().any() or (heights <= 0).any() or (widths <= 0).any():
        shapes = [shape for shape in probe_shards(root, items, cfg.max_file_bytes) if shape is not None]
    else:
        shapes = list(zip(heights.astype(int).tolist(), widths.astype(int).tolist()))
    return [shape for shape in shapes if shape[0] * shape[1] <= cfg.max_pixels]


def prepare_shards(root: Path, out: Path, cfg: PrepareConfig, survey_json: Path | None = None) -> Prepared:
    """The prepare stage for a shard-layout dataset `root`: the shard layout of
    pipeline.core.prepared in `out`, built in a staged folder and swapped in when complete."""
    items, skipped = stored_items(root)
    classes = read_classes(root) or sorted(set(items["class"]))
    unknown = sorted(set(items["class"]) - set(classes))
    if unknown:
        raise InputError(f"{root}: classes {unknown} are not in the declared classes {classes}")
    if len(classes) < 2:
        raise DataError(f"{root}: {len(classes)} class ({', '.join(classes)}); a classifier needs at least two classes")
    if not len(items):
        raise DataError(f"no usable image in {root} ({len(skipped)} skipped{_top_reasons(skipped)})")
    size = input_size(cfg, survey_json, lambda: _manifest_shapes(root, items, cfg))
    channels = 3 if cfg.color == "rgb" else 1
    labels = [classes.index(cls) for cls in items["class"]]
    splits = split_items(labels, [s if s in SPLITS else "" for s in items["split"]], cfg, len(classes))
    check_splits(splits, labels)
    _check_space(out, sum(map(len, splits.values())) * math.prod((*size, channels)))
    assigned = [""] * len(items)
    for split, positions in splits.items():
        for i in positions:
            assigned[i] = split

    with exclusive(out, "prepare"), staged_dir(out) as tmp:
        (tmp / SHARDS).mkdir()
        tasks, members = [], items["member"].tolist()
        for shard, group in items.groupby("shard", sort=True):
            chosen = [i for i in group.index.tolist() if assigned[i]]
            if chosen:
                tasks.append(
                    ShardTask(
                        root,
                        tmp,
                        str(shard),
                        tuple(members[i] for i in chosen),
                        tuple(labels[i] for i in chosen),
                        tuple(assigned[i] for i in chosen),
                        size,
                        cfg.aspect,
                        cfg.color,
                        cfg.max_pixels,
                        cfg.max_file_bytes,
                    )
                )
        finished = map_shards(prepare_shard, tasks, cfg.engine, cfg.scheduler, cfg.workers, section="prepare")
        results = sorted(
            progress(finished, f"Preparing {len(tasks)} shards", total=len(tasks)), key=lambda result: result.shard
        )  # (tasks are in shard order)
        sizes, index_rows, shards = {split: 0 for split in SPLITS}, {split: [] for split in SPLITS}, []
        for task, result in zip(tasks, results):
            for split in SPLITS:
                for i in result.kept[split]:
                    cls = classes[task.labels[i]]
                    index_rows[split].append(
                        {
                            "split": split,
                            "row": sizes[split],
                            "path": printable(member_path(task.shard, task.members[i])),
                            "class": cls,
                            "label": task.labels[i],
                        }
                    )
                    sizes[split] += 1
            skipped += [(member_path(task.shard, member), reason) for member, reason in result.skipped]
            shards.append({"name": task.shard, **{split: len(result.kept[split]) for split in SPLITS}})
        skipped = sorted((printable(path), reason) for path, reason in skipped)
        rows = [row for split in SPLITS for row in index_rows[split]]
        input_shape = (*size, channels)
        write_listing(
            tmp,
            rows,
            skipped,
            classes,
            input_shape,
            sizes,
            cfg,
            read_source(root) or "folder",
            _manifest_sha256(root),
            layout=SHARDS,
            shards=shards,
        )
    kept = sum(sizes.values())
    warnings = (
        [
            f"most files were skipped, {len(skipped)} of {len(skipped) + kept}{_top_reasons(skipped)} (see {out / SKIPPED})"
        ]
        if len(skipped) > kept
        else []
    )
    return Prepared(out, classes, input_shape, sizes, skipped, warnings)
