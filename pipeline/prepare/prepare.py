"""Decode, convert and resize every usable image into fixed-size uint8 arrays with a stratified split.

One path for every layout of the input (pipeline.prepare.items reads it): list the items, screen
them by header size (the manifest's where fetch measured it, else read from the file), choose the
input size, draw the split, then decode group by group, one task per group (a shard, or a slice of
a folder's files) on `prepare.engine` (pipeline.core.engine: a local process pool, or Dask; one
group runs in this process). Each task writes its images straight into their rows of the output
arrays with `os.pwrite`: nothing is held in memory, and pages stay in the page cache, out of every
process. The output is the prepared-data format of pipeline.core.prepared: single arrays per
split for a folder dataset, per-shard arrays for a shard dataset; the same bytes whatever the
engine and the number of workers.

The whole output is built in a temporary folder beside `out` and swapped in when complete, by one
writer at a time: a kill, a full disk or a second run never leaves arrays that a later stage would
trust next to metadata that does not describe them.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.checkpoint import checkpoint
from pipeline.core.config import MAX_SIDE
from pipeline.core.console import advance, bar
from pipeline.core.engine import Engine
from pipeline.core.errors import ConfigError, DataError, ImageError, InputError
from pipeline.core.files import atomic_file, exclusive, human_size, printable, staged_dir, write_text
from pipeline.core.images import load
from pipeline.core.prepared import (
    INDEX,
    SHARDS,
    SKIPPED,
    SPLITS,
    images_file,
    labels_file,
    shard_images_file,
    shard_labels_file,
    write_meta,
)
from pipeline.prepare.duplicates import dedupe, item_hashes
from pipeline.prepare.items import Items, Reader, checked_digest, list_items
from pipeline.prepare.params import PrepareParams
from pipeline.prepare.survey import summarise


@dataclass(frozen=True)
class Prepared:
    out: Path
    classes: list[str]
    input_shape: tuple[int, int, int]
    sizes: dict[str, int]
    skipped: list[tuple[str, str]]  # (path, reason)
    warnings: list[str] = field(default_factory=list)  # e.g. most files skipped


# --- Size and split -----------------------------------------------------------------------------


def auto_size(most_common: list[int], scale: float) -> tuple[int, int]:
    """Most common shape x scale, rounded half up (seed 000: 375x500 x 1/4 -> 94x125)."""
    if not most_common:
        raise InputError("no readable image to derive the input size from; give --size HxW")
    return tuple(max(1, math.floor(side * scale + 0.5)) for side in most_common)


def input_size(
    cfg: PrepareParams, survey_json: Path | None, shapes: Callable[[], list[tuple[int, int]]]
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
            f"prepare: input size {size[0]}x{size[1]} exceeds {MAX_SIDE} pixels a side; "
            "lower prepare.scale or set prepare.size"
        )
    return size


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


def check_splits(splits: dict[str, list[int]], labels: list[int]) -> None:
    """Each split needs images of two classes at least."""
    for split, rows in splits.items():
        present = {labels[i] for i in rows}
        if len(present) < 2:
            raise DataError(
                f"the {split} split has images of {len(present)} class(es) only; "
                f"each split needs at least two (check prepare.{split}_size and the data)"
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


def split_items(labels: list[int], fixed: list[str], cfg: PrepareParams, n_classes: int) -> dict[str, list[int]]:
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


# --- One group, one task -------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupTask:
    """One group's images and where each goes: row `rows[i]` of `files[target[i]]` (small and
    picklable: the files are made, at their full size, before the tasks run)."""

    reader: Reader
    group: str
    members: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]
    digests: tuple[str, ...]  # the SHA-256 the manifest recorded for each ("" = none to check)
    target: tuple[int, ...]  # index into `files`
    rows: tuple[int, ...]
    files: tuple[tuple[str, int], ...]  # (.npy file, byte offset of its first row)
    size: tuple[int, int]
    aspect: str
    color: str
    max_file_bytes: int


@dataclass(frozen=True)
class GroupDone:
    group: str
    failed: dict[int, str]  # position in the group -> why it could not be prepared
    counted: bool  # whether this process's progress bar already counted its images


def prepare_group(task: GroupTask) -> GroupDone:
    """Decode, convert and resize one group's images into their rows (see the module docstring)."""
    if multiprocessing.parent_process() is not None:  # one task per core already
        import cv2

        cv2.setNumThreads(1)
    row_bytes = math.prod((*task.size, 3 if task.color == "rgb" else 1))
    fds = [os.open(path, os.O_WRONLY) for path, _ in task.files]
    failed, counted = {}, True
    try:
        for position, data in task.reader.images(task.group, list(task.members), task.max_file_bytes):
            try:
                if isinstance(data, ImageError):
                    raise data
                if task.digests[position]:
                    checked_digest(data, task.digests[position])
                img = load(data, task.size, task.aspect, task.color, task.shapes[position])
            except ImageError as exc:
                failed[position] = str(exc)
                continue
            finally:
                counted = advance() and counted
            path, offset = task.files[task.target[position]]
            try:
                os.pwrite(
                    fds[task.target[position]], np.ascontiguousarray(img).data, offset + task.rows[position] * row_bytes
                )
            except OSError as exc:  # name the file the user must make room for
                raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        for fd in fds:
            os.close(fd)
    return GroupDone(task.group, failed, counted)


# --- The stage -----------------------------------------------------------------------------------


def prepare(root: Path, out: Path, cfg: PrepareParams, survey_json: Path | None = None) -> Prepared:
    """The prepare stage: every usable image of `root` into the prepared-data format in `out`."""
    src, dst = root.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise ConfigError(
            f"--out {out} is inside --in {root}: the next run would read the output as a class; "
            "choose a folder outside it"
        )
    items = list_items(root)
    classes, skipped = items.classes, list(items.skipped)
    unknown = sorted(set(items.frame["class"]) - set(classes))
    if unknown:
        raise InputError(f"{root}: classes {unknown} are not in the declared classes {classes}")
    if len(classes) < 2:
        raise DataError(f"{root}: {len(classes)} class ({', '.join(classes)}); a classifier needs at least two classes")
    usable = _screen(items, cfg, skipped)
    if cfg.dedupe != "none" and len(usable):
        hashes = item_hashes(items, usable, cfg, near=cfg.dedupe == "near")
        keep, dropped = dedupe(usable, hashes, cfg.dedupe, cfg.near_distance)
        skipped += dropped
        usable = usable[keep].reset_index(drop=True)
    if not len(usable):
        raise DataError(f"no usable image in {root} ({len(skipped)} skipped{_top_reasons(skipped)})")
    size = input_size(cfg, survey_json, lambda: list(zip(usable["height"].tolist(), usable["width"].tolist())))
    channels = 3 if cfg.color == "rgb" else 1
    labels = [classes.index(cls) for cls in usable["class"]]
    splits = split_items(labels, usable["split"].tolist(), cfg, len(classes))
    check_splits(splits, labels)
    _check_space(out, sum(map(len, splits.values())) * math.prod((*size, channels)))
    usable["label"] = labels
    usable["target"] = ""
    for split, chosen in splits.items():
        usable.iloc[chosen, usable.columns.get_loc("target")] = split
    chosen = usable[usable["target"] != ""].copy()

    with exclusive(out, "prepare"), staged_dir(out) as tmp:
        output = (ShardArrays if items.sharded else Arrays)(tmp, chosen, (*size, channels))
        tasks = [
            GroupTask(
                replace(items.reader, root=items.root.resolve()),  # (paths as every worker sees them)
                group,
                tuple(rows["member"]),
                tuple(zip(rows["height"].tolist(), rows["width"].tolist())),
                tuple(rows["sha256"].tolist()),
                tuple(rows["file"].tolist()),
                tuple(rows["row"].tolist()),
                output.files(group),
                size,
                cfg.aspect,
                cfg.color,
                cfg.max_file_bytes,
            )
            for group, rows in items.groups(output.chosen)
        ]
        failed: dict[str, dict[int, str]] = {}
        count = {task.group: len(task.members) for task in tasks}
        with (
            Engine(cfg, ("pipeline.prepare.prepare",)) as engine,
            bar(f"Preparing {len(chosen):,} images", len(chosen)) as step,
        ):
            for done in engine.map(prepare_group, tasks):
                failed[done.group] = done.failed
                if not done.counted:
                    step(count[done.group])
                checkpoint("prepare.group")
        kept, bad = output.finish(failed)
        skipped += bad
        skipped = sorted((printable(path), reason) for path, reason in skipped)
        sizes = {split: int((kept["target"] == split).sum()) for split in SPLITS}
        index = pd.DataFrame(
            {
                "split": kept["target"],
                "row": kept.groupby("target", sort=False).cumcount(),
                "path": kept["path"].map(printable),
                "class": kept["class"],
                "label": kept["label"],
            }
        )
        write_text(tmp / INDEX, index.to_csv(index=False, lineterminator="\n"))
        write_text(
            tmp / SKIPPED, pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(index=False, lineterminator="\n")
        )
        meta = {
            "classes": classes,
            "input_shape": [*size, channels],
            "splits": sizes,
            "aspect": cfg.aspect,
            "color": cfg.color,
            "skipped": len(skipped),
            "source": items.source,
            "manifest_sha256": items.digest,
            **output.meta(kept),
        }
        write_meta(tmp, meta)  # last: the folder is complete
    n = sum(sizes.values())
    warnings = (
        [f"most files were skipped, {len(skipped)} of {len(skipped) + n}{_top_reasons(skipped)} (see {out / SKIPPED})"]
        if len(skipped) > n
        else []
    )
    return Prepared(out, classes, (*size, channels), sizes, skipped, warnings)


def _screen(items: Items, cfg: PrepareParams, skipped: list[tuple[str, str]]) -> pd.DataFrame:
    """The items whose header reads and whose pixels are within `prepare.max_pixels`, with their
    (height, width); the others go to `skipped` with the reason. Sizes the manifest measured are
    used as they are; the rest are read from the headers, group by group."""
    frame = items.frame.copy()
    heights, widths = frame["height"].to_numpy().copy(), frame["width"].to_numpy().copy()
    unknown = frame[(heights <= 0) | (widths <= 0)]
    for group, rows in items.groups(unknown):
        at = rows.index.to_numpy()
        for position, shape in items.reader.shapes(group, rows["member"].tolist(), cfg.max_file_bytes):
            heights[at[position]], widths[at[position]] = shape or (0, 0)
    frame["height"], frame["width"] = heights, widths
    unreadable = (frame["height"] <= 0) | (frame["width"] <= 0)
    too_big = ~unreadable & (frame["height"] * frame["width"] > cfg.max_pixels)
    skipped += [(path, "not an image") for path in frame.loc[unreadable, "path"]]
    skipped += [
        (path, f"too many pixels: {w}x{h} > prepare.max_pixels {cfg.max_pixels}")
        for path, h, w in frame.loc[too_big, ["path", "height", "width"]].itertuples(index=False)
    ]
    return frame[~unreadable & ~too_big].reset_index(drop=True)


class Arrays:
    """The arrays layout (a folder dataset): `<split>_x.npy` and `<split>_y.npy` per split, the
    split's rows in listing order."""

    def __init__(self, out: Path, chosen: pd.DataFrame, shape: tuple[int, int, int]):
        self.out, self.shape = out, shape
        chosen["file"] = [SPLITS.index(split) for split in chosen["target"]]
        chosen["row"] = chosen.groupby("target", sort=False).cumcount().to_numpy()
        self.chosen = chosen.sort_values("file", kind="stable")  # split-major, each split in listing order
        counts = chosen["target"].value_counts()
        self._files = tuple(_new_array(images_file(out, split), int(counts.get(split, 0)), shape) for split in SPLITS)

    def files(self, group: str) -> tuple[tuple[str, int], ...]:
        return self._files

    def finish(self, failed: dict[str, dict[int, str]]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        """Drop the rows that failed (rare: the arrays are rewritten without them) and write the
        labels; the kept rows in output order, and the (path, reason) of the failed ones."""
        drop = _failed_rows(self.chosen, failed)
        for k, split in enumerate(SPLITS):
            rows = self.chosen[self.chosen["file"] == k]
            _compact(
                images_file(self.out, split),
                rows.loc[drop.reindex(rows.index, fill_value=False), "row"].tolist(),
                self.shape,
            )
            _save_labels(labels_file(self.out, split), rows.loc[~drop.reindex(rows.index, fill_value=False), "label"])
        return self.chosen[~drop], _reasons(self.chosen, drop, failed)

    def meta(self, kept: pd.DataFrame) -> dict:
        return {}


class ShardArrays:
    """The shard layout (a shard dataset): per input shard `shards/<NNNNN>-<split>_{x,y}.npy`, its
    rows in manifest order; meta.json lists the shards."""

    def __init__(self, out: Path, chosen: pd.DataFrame, shape: tuple[int, int, int]):
        self.out, self.shape = out, shape
        (out / SHARDS).mkdir()
        chosen["file"] = [SPLITS.index(split) for split in chosen["target"]]
        chosen["row"] = chosen.groupby(["group", "target"], sort=False).cumcount().to_numpy()
        self.chosen = chosen.sort_values(["file", "group"], kind="stable")  # split-major, shards in name order
        self._files = {}
        for group, rows in chosen.groupby("group", sort=True):
            counts = rows["target"].value_counts()
            self._files[group] = tuple(
                _new_array(shard_images_file(out, group, split), int(counts.get(split, 0)), shape) for split in SPLITS
            )

    def files(self, group: str) -> tuple[tuple[str, int], ...]:
        return self._files[group]

    def finish(self, failed: dict[str, dict[int, str]]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        drop = _failed_rows(self.chosen, failed)
        for (group, k), rows in self.chosen.groupby(["group", "file"], sort=True):
            gone = drop.reindex(rows.index, fill_value=False)
            _compact(shard_images_file(self.out, group, SPLITS[k]), rows.loc[gone, "row"].tolist(), self.shape)
            _save_labels(shard_labels_file(self.out, group, SPLITS[k]), rows.loc[~gone, "label"])
        for group in self._files:  # a split with no rows in a shard still has its (empty) labels
            for split in SPLITS:
                if not shard_labels_file(self.out, group, split).exists():
                    _save_labels(shard_labels_file(self.out, group, split), pd.Series([], dtype=np.int32))
        return self.chosen[~drop], _reasons(self.chosen, drop, failed)

    def meta(self, kept: pd.DataFrame) -> dict:
        counts = kept.groupby(["group", "target"]).size()
        shards = [
            {"name": group, **{split: int(counts.get((group, split), 0)) for split in SPLITS}} for group in self._files
        ]
        return {"layout": SHARDS, "shards": shards}


def _new_array(path: Path, rows: int, shape: tuple[int, int, int]) -> tuple[str, int]:
    """A .npy file of `rows` uint8 images, sized but not written (its pages come from the tasks):
    its path and the byte offset of its first row."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *shape))
    offset = header.offset
    del header
    return str(path.resolve()), offset


def _failed_rows(chosen: pd.DataFrame, failed: dict[str, dict[int, str]]) -> pd.Series:
    """True for the chosen items whose task could not prepare them."""
    position = chosen.groupby("group", sort=False).cumcount()
    return pd.Series(
        [p in failed.get(g, ()) for g, p in zip(chosen["group"], position)], index=chosen.index, dtype=bool
    )


def _reasons(chosen: pd.DataFrame, drop: pd.Series, failed: dict[str, dict[int, str]]) -> list[tuple[str, str]]:
    position = chosen.groupby("group", sort=False).cumcount()
    return [(path, failed[g][p]) for path, g, p in zip(chosen["path"][drop], chosen["group"][drop], position[drop])]


def _compact(path: Path, gone: list[int], shape: tuple[int, int, int]) -> None:
    """Rewrite the array at `path` without rows `gone` (rare), a chunk at a time."""
    if not gone:
        return
    src = np.load(path, mmap_mode="r")
    keep = np.setdiff1d(np.arange(len(src)), gone)
    tmp = path.with_name(f".{path.name}.tmp")
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep), *shape))
    for start in range(0, len(keep), 256):
        dst[start : start + 256] = src[keep[start : start + 256]]
    dst.flush()
    del dst, src
    os.replace(tmp, path)


def _save_labels(path: Path, labels: pd.Series) -> None:
    with atomic_file(path) as fh:
        np.save(fh, np.asarray(labels, dtype=np.int32))


def _top_reasons(skipped: list[tuple[str, str]], top: int = 3) -> str:
    """': 120 too small, 3 not an image' -- the commonest reasons, by kind."""
    counts = Counter(reason.split(":", 1)[0] for _, reason in skipped)
    return (": " + ", ".join(f"{n} {kind}" for kind, n in counts.most_common(top))) if counts else ""


def _check_space(out: Path, needed: int) -> None:
    """Refuse before writing when the arrays cannot fit (instead of a full disk half way)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise DataError(
            f"the prepared arrays need {human_size(needed)} but {out.parent} has {human_size(free)} free; "
            "lower prepare.size or prepare.scale, or free space"
        )
