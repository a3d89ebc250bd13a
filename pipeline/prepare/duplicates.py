"""Duplicate items of a fetched dataset: exact (the same bytes, by SHA-256) and near (the same
picture resized, re-encoded, slightly cropped or brightened, by a 64-bit perceptual hash).

    hashes = item_hashes(items, frame, cfg, near=True)  # one pass over the bytes, per group, on the engine
    group = duplicate_groups(hashes, distance)          # a group number per item; -1 for an item alone
    kept, dropped = dedupe(frame, hashes, "near", 8)    # prepare.dedupe: one item of each group

`prepare` (with `prepare.dedupe`) and `audit` share them. Fetch records both hashes in the manifest
in the pass that checks each image (`sha256`, `dhash`), so a fetched dataset is not read again; the
items without them (a plain folder, `fetch.download.verify: header`, an older fetch) are read once,
a task per group (a shard, or a slice of a folder's files) on the engine: the SHA-256 of each
(checked against the manifest's where it recorded one) and its difference hash
(`pipeline.core.images.dhash`). With `near=False` only the SHA-256 is needed.
Near pairs come from a multi-index search (`pipeline.core.hamming`), never from all pairs; groups
are the connected components of the exact and near pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.core.checkpoint import checkpoint
from pipeline.core.console import advance, bar
from pipeline.core.engine import Engine, EngineParams
from pipeline.core.errors import ImageError
from pipeline.core.hamming import components, near_pairs
from pipeline.core.images import dhash
from pipeline.prepare.items import Items, Reader, checked_digest

Dedupe = Literal["none", "exact", "near"]


@dataclass(frozen=True)
class HashTask:
    reader: Reader
    group: str
    members: tuple[str, ...]
    digests: tuple[str, ...]  # the manifest's SHA-256 of each ("" = none recorded)
    max_bytes: int
    max_pixels: int
    near: bool  # the difference hash too (else the SHA-256 alone)


@dataclass(frozen=True)
class HashDone:
    group: str
    sha256: tuple[str, ...]  # "" where the item could not be read
    dhash: tuple[int, ...]  # 0 where it could not be hashed (see failed)
    failed: dict[int, str]  # position in the group -> why
    counted: bool


def hash_group(task: HashTask) -> HashDone:
    """The SHA-256 and difference hash of one group's items, each item's bytes read once."""
    n = len(task.members)
    digests, hashes, failed, counted = [""] * n, [0] * n, {}, True
    for position, data in task.reader.images(task.group, list(task.members), task.max_bytes):
        try:
            if isinstance(data, ImageError):
                raise data
            digests[position] = checked_digest(data, task.digests[position])
            if task.near:
                hashes[position] = dhash(data, task.max_pixels)
        except ImageError as exc:
            failed[position] = str(exc)
        finally:
            counted = advance() and counted
    return HashDone(task.group, tuple(digests), tuple(hashes), failed, counted)


def item_hashes(items: Items, frame: pd.DataFrame, cfg: EngineParams, near: bool) -> pd.DataFrame:
    """(`cfg`: the stage's params: its engine, `max_file_bytes` and `max_pixels`.)

    `sha256`, `dhash` (uint64) and `error` ("" when read) for each row of `frame` (a subset of
    `items.frame`, same index). What the manifest recorded is used as it is (fetch hashed the pixels
    it decoded to check them); only the other items are read, and without `near` only those without
    a SHA-256 (their `dhash` is then 0)."""
    known = frame["dhash"].str.fullmatch("[0-9a-f]{16}").to_numpy(bool)
    out = pd.DataFrame(
        {
            "sha256": frame["sha256"].astype(str).to_numpy(object),
            "dhash": np.array([int(h, 16) if k else 0 for h, k in zip(frame["dhash"], known)], np.uint64),
            "error": "",
        },
        index=frame.index,
    )
    todo = frame[(frame["sha256"] == "").to_numpy() | (near & ~known)]
    if not len(todo):
        return out
    reader = replace(items.reader, root=items.root.resolve())  # (paths as every worker sees them)
    groups = list(items.groups(todo))
    tasks = [
        HashTask(
            reader,
            group,
            tuple(rows["member"]),
            tuple(rows["sha256"]),
            int(cfg.max_file_bytes),
            int(cfg.max_pixels),
            near,
        )
        for group, rows in groups
    ]
    positions = {group: out.index.get_indexer(rows.index) for group, rows in groups}
    sha = out["sha256"].to_numpy(object, copy=True)
    hashes, errors = out["dhash"].to_numpy(np.uint64, copy=True), out["error"].to_numpy(object, copy=True)
    with (
        Engine(cfg, ("pipeline.prepare.duplicates",)) as engine,
        bar(f"Hashing {len(todo):,} images", len(todo)) as step,
    ):
        for done in engine.map(hash_group, tasks):
            rows = positions[done.group]
            for position, row in enumerate(rows):
                sha[row], errors[row] = done.sha256[position], done.failed.get(position, "")
                if near:
                    hashes[row] = done.dhash[position]
            if not done.counted:
                step(len(rows))
            checkpoint("hash.group")
    out["sha256"], out["dhash"], out["error"] = sha, hashes, errors
    return out


def duplicate_groups(hashes: pd.DataFrame, distance: int | None) -> np.ndarray:
    """A group number per row of `hashes` (from `item_hashes`; rows with an `error` stay alone):
    rows with the same SHA-256 and, with a `distance`, rows whose difference hashes differ in at most
    `distance` bits, joined transitively. Numbered in order of first member; -1 for a row alone."""
    n = len(hashes)
    readable = (hashes["error"] == "").to_numpy() & (hashes["sha256"] != "").to_numpy()
    rows = np.flatnonzero(readable)
    pairs = list(_same(hashes["sha256"].to_numpy(object)[rows]))
    if distance is not None:
        pairs += list(near_pairs(np.ascontiguousarray(hashes["dhash"].to_numpy(np.uint64)[rows]), distance))
    labels = components(len(rows), pairs)  # numbered in order of each group's first row
    shared = np.bincount(labels, minlength=len(rows))[labels] > 1 if len(rows) else np.zeros(0, bool)
    group = np.full(n, -1, np.int64)
    if shared.any():
        group[rows[shared]] = np.unique(labels[shared], return_inverse=True)[1]
    return group


def _same(digests: np.ndarray):
    """(i, j, 0) chunks joining each row to the first row with the same SHA-256."""
    first = pd.Series(np.arange(len(digests))).groupby(pd.Series(digests), sort=False).transform("first").to_numpy()
    j = np.flatnonzero(first != np.arange(len(digests)))
    if len(j):
        yield first[j].astype(np.int64), j.astype(np.int64), np.zeros(len(j), np.int64)


def dedupe(frame: pd.DataFrame, hashes: pd.DataFrame, mode: Dedupe, distance: int) -> tuple[np.ndarray, list]:
    """One item of each duplicate group of `frame` (prepare's items, with `path` and a source-fixed
    `split`): the first training item of the group, else its first item. A mask of the rows kept, and
    (path, reason) for each row dropped, naming the item kept (and, for a validation copy of a
    training item, the leak it would have been)."""
    group = duplicate_groups(hashes, distance if mode == "near" else None)
    keep = np.ones(len(frame), bool)
    dropped = []
    if not (group >= 0).any():
        return keep, dropped
    paths, splits, sha = frame["path"].to_numpy(object), frame["split"].to_numpy(object), hashes["sha256"].to_numpy()
    order = pd.Series(np.arange(len(frame)))[group >= 0].groupby(group[group >= 0], sort=True)
    for _, members in order:
        rows = members.to_numpy()
        training = rows[splits[rows] == "train"]
        keeper = training[0] if len(training) else rows[0]
        for row in rows[rows != keeper]:
            keep[row] = False
            same = "exact duplicate" if sha[row] == sha[keeper] else "near duplicate"
            if splits[row] == "val" and splits[keeper] == "train":
                reason = f"leakage: a validation {same} of training item {paths[keeper]}"
            else:
                reason = f"{same} of {paths[keeper]}"
            dropped.append((paths[row], reason))
    return keep, dropped
