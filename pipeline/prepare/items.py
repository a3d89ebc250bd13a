"""The items of a fetched dataset, whatever its layout: a table of items, then bytes per group of
items. `survey-shapes` and `prepare` read every layout through this one interface.

    items = list_items(root)                      # Items: the table, its classes, its identity
    for group, rows in items.groups():            # a shard, or a slice of a folder's files
        for position, data in items.reader.images(group, members, max_bytes): ...
        for position, shape in items.reader.shapes(group, members, max_bytes): ...

Two readers, one per layout of pipeline.core.dataset (a new layout is one more):

- `FolderReader`: the files under the dataset folder, each read on its own (never following a
  symbolic link, capped in bytes); the items are the manifest's `success` rows, or for a plain folder of
  class subfolders every regular file in them (classes in alphabetical order);
- `ShardReader`: the members of `shards/<NNNNN>.tar`, each tar streamed once per group; the items
  are the settled manifest's `success` rows.

The table (`Items.frame`) has one row per item, in listing order: `path` (as index.csv and
skipped.csv record it), `class`, `split` (train / val where the source fixed it, else ""),
`group`, `member` (the item in its group), and `height`/`width`, `sha256` and `dhash` (hex) where the
manifest recorded them (0 and "" where unknown: a plain folder). Readers are small frozen values, so a
task on a process pool or a Dask worker gets its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from pipeline.core.dataset import (
    MANIFEST,
    SIDECARS,
    check_complete,
    iter_shard_images,
    layout,
    manifest_files,
    read_classes,
    read_manifest,
    read_source,
    stored_items,
)
from pipeline.core.errors import ImageError, InputError
from pipeline.core.files import printable, read_capped, walk
from pipeline.core.images import probe
from pipeline.core.prepared import SPLITS

FOLDER_GROUP = 256  # files per group of a folder dataset: a task's worth of decoding, a few hundred ms
COLUMNS = ["path", "class", "split", "group", "member", "height", "width", "sha256", "dhash"]


def checked_digest(data: bytes, expected: str) -> str:
    """The SHA-256 of bytes read from a dataset, which must be `expected`, the one fetch recorded
    when there is one (a flipped bit in a shard is never trained on nor hashed); ImageError if not."""
    digest = hashlib.sha256(data).hexdigest()
    if expected and digest != expected:
        raise ImageError(
            f"damaged: its SHA-256 is not the manifest's {expected[:12]}...; "
            "`pipeline fetch --verify` fetches damaged shards again"
        )
    return digest


def _probe_or_none(source: Path | bytes) -> tuple[int, int] | None:
    try:
        return probe(source)
    except ImageError:
        return None


@dataclass(frozen=True)
class FolderReader:
    """Files under `root`, named by their path relative to it."""

    root: Path

    def images(self, group: str, members: list[str], max_bytes: int) -> Iterator[tuple[int, bytes | ImageError]]:
        for position, member in enumerate(members):
            try:
                yield position, read_capped(self.root / member, max_bytes)
            except ImageError as exc:
                yield position, exc

    def shapes(self, group: str, members: list[str], max_bytes: int) -> Iterator[tuple[int, tuple[int, int] | None]]:
        """Header sizes (a file's first bytes only: no pixel is decoded, no file read whole)."""
        for position, member in enumerate(members):
            yield position, _probe_or_none(self.root / member)


@dataclass(frozen=True)
class ShardReader:
    """Members of the tars in `root/shards/`; a group is a shard (`NNNNN`)."""

    root: Path

    def images(self, group: str, members: list[str], max_bytes: int) -> Iterator[tuple[int, bytes | ImageError]]:
        """Each wanted member once (the first of a name repeated in a tar), in tar order; a member
        the tar lacks comes last, as an ImageError."""
        where = {member: position for position, member in enumerate(members)}
        for member, data in iter_shard_images(self.root, group, max_bytes, set(where)):
            position = where.pop(member, None)
            if position is not None:
                yield position, data
        for position in where.values():
            yield position, ImageError("missing from its shard")

    def shapes(self, group: str, members: list[str], max_bytes: int) -> Iterator[tuple[int, tuple[int, int] | None]]:
        """Header sizes, from the members' bytes (a tar member is read whole: they are small)."""
        for position, data in self.images(group, members, max_bytes):
            yield position, None if isinstance(data, ImageError) else _probe_or_none(data)


Reader = FolderReader | ShardReader


@dataclass(frozen=True)
class Items:
    root: Path
    reader: Reader
    frame: pd.DataFrame  # COLUMNS, one row per item, in listing order
    classes: list[str]
    digest: str  # the identity of the listing (meta.json's manifest_sha256)
    source: str  # the fetch source, or "folder" for a plain folder
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of entries left out

    @property
    def sharded(self) -> bool:
        return isinstance(self.reader, ShardReader)

    def groups(self, frame: pd.DataFrame | None = None) -> Iterator[tuple[str, pd.DataFrame]]:
        """(group, its rows of `frame`, default every item), groups in name order."""
        frame = self.frame if frame is None else frame
        yield from ((str(group), rows) for group, rows in frame.groupby("group", sort=True))


def list_items(root: Path, every_file: bool = False) -> Items:
    """The items of the dataset at `root` (refused while a fetch is writing it). With `every_file`,
    a folder's items are all its files, whether its manifest lists them or not (what the survey
    reads); otherwise what prepare uses: the manifest's `success` rows, or a plain folder's class
    subfolders. Nothing outside `root` is ever read."""
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    check_complete(root)
    if layout(root) == "shards":
        return _shard_items(root)
    if every_file:
        files = [path.relative_to(root).as_posix() for path in walk(root)[0] if path.name not in SIDECARS]
        return _folder_items(root, files, [""] * len(files), [""] * len(files), [], "", "folder", [])
    manifest = read_manifest(root)
    if manifest is None:
        return _class_folders(root)
    ok = manifest[manifest["status"] == "success"].reset_index(drop=True)
    inside = np.array(
        [not PurePosixPath(p).is_absolute() and ".." not in PurePosixPath(p).parts for p in ok["path"]], bool
    )
    outside = [(path, "path outside the dataset folder") for path in ok["path"][~inside]]
    ok = ok[inside].reset_index(drop=True)
    splits = [split if split in SPLITS else "" for split in ok["split"]]
    classes = read_classes(root) or sorted(set(ok["class"]))
    digest = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
    source = read_source(root) or "folder"
    items = _folder_items(root, ok["path"].tolist(), ok["class"].tolist(), splits, classes, digest, source, outside)
    return _with_shapes(items, ok)


def _folder_items(
    root: Path,
    paths: list[str],
    labels: list[str],
    splits: list[str],
    classes: list[str],
    digest: str,
    source: str,
    skipped: list[tuple[str, str]],
) -> Items:
    """Files under `root` as items (`labels`: each one's class), in groups of FOLDER_GROUP."""
    n = len(paths)
    paths = pd.Series(paths, dtype=object)  # (file names that are not UTF-8 stay as Python keeps them)
    frame = pd.DataFrame(
        {
            "path": paths,
            "class": pd.Series(labels, dtype=object),
            "split": splits,
            "group": [f"{i // FOLDER_GROUP:06d}" for i in range(n)],
            "member": paths,
            "height": np.zeros(n, np.int64),
            "width": np.zeros(n, np.int64),
            "sha256": "",
            "dhash": "",
        }
    )
    return Items(root, FolderReader(root), frame, classes, digest, source, skipped)


def _class_folders(root: Path) -> Items:
    """A plain folder: one subfolder per class (alphabetical), every regular file in it an item."""
    folders = sorted(d for d in root.iterdir() if not d.name.startswith(".") and not d.is_symlink() and d.is_dir())
    if not folders:
        raise InputError(f"no class subfolders in {root}: expected {root}/<class>/<image files>")
    paths, classes, others = [], [], []
    for folder in folders:
        files, rest = walk(folder)
        paths += [path.relative_to(root).as_posix() for path in files]
        classes += [folder.name] * len(files)
        others += [(path.relative_to(root).as_posix(), reason) for path, reason in rest]
    listing = "".join(f"{printable(rel)}\t{(root / rel).stat().st_size}\n" for rel in paths)
    digest = hashlib.sha256(listing.encode()).hexdigest()
    names = [d.name for d in folders]
    return _folder_items(root, paths, classes, [""] * len(paths), names, digest, "folder", others)


def _shard_items(root: Path) -> Items:
    """The settled manifest's `success` rows, each located in its shard (refused when a tar is missing)."""
    ok, bad = stored_items(root)
    frame = pd.DataFrame(
        {
            "path": ok["path"].astype(str),
            "class": ok["class"].astype(str),
            "split": [split if split in SPLITS else "" for split in ok["split"]],
            "group": ok["shard"].astype(str),
            "member": ok["member"].astype(str),
            "height": 0,
            "width": 0,
            "sha256": "",
            "dhash": "",
        }
    )
    classes = read_classes(root) or sorted(set(frame["class"]))
    items = Items(root, ShardReader(root), frame, classes, _manifest_digest(root), read_source(root) or "folder", bad)
    return _with_shapes(items, ok)


def _with_shapes(items: Items, manifest: pd.DataFrame) -> Items:
    """The manifest's measured (height, width) of each item, 0 where it has none, the SHA-256 of the
    bytes fetch stored ("" where it has none), which the reading of the item must match, and the
    difference hash of its pixels ("" where none was recorded)."""
    for column in ("height", "width"):
        values = pd.to_numeric(manifest[column], errors="coerce").fillna(0).clip(lower=0)
        items.frame[column] = values.astype(np.int64).to_numpy()
    items.frame["sha256"] = manifest["sha256"].fillna("").astype(str).str.lower().to_numpy()
    if "dhash" in manifest.columns:
        items.frame["dhash"] = manifest["dhash"].fillna("").astype(str).str.lower().to_numpy()
    return items


def _manifest_digest(root: Path) -> str:
    """The identity of a shard dataset's listing: the settled manifest files, hashed in shard order."""
    digest = hashlib.sha256()
    for path in manifest_files(root):
        digest.update(f"{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
