"""The fetched-dataset format: what `fetch` writes and `survey-shapes` and `prepare` read.

Two layouts, told apart by `dataset.json`'s `layout`:

- folder (small data; no `layout` key): `<out>/<class>/<file>` with `manifest.csv`, one row per
  candidate item whatever happened to it: `status` is `ok`, `duplicate`, `skipped` or `failed`, and
  `reason` says why for anything but `ok`; `dataset.json` (the source and its class order: label i =
  classes[i]); `summary.json` (counts by status and reason). Any other folder of class subfolders is
  read as a dataset without a manifest.
- shards (large data; `"layout": "shards"`): `shards/<NNNNN>.tar`, webdataset tars with one sample
  per stored image (members `<key>.<ext>`, the original bytes, and `<key>.json`), beside each its
  `<NNNNN>.parquet` (that shard's manifest rows) and `<NNNNN>.stats.json` (written last: the shard is
  done); and `manifest.parquet`, the final manifest (COLUMNS, dedupe and split settled), whose `path`
  is `shards/<NNNNN>.tar#<member>` for stored items. Readers use its `ok` rows only (duplicates stay
  in the tars, unused).

Either way `.incomplete` marks a fetch still writing (or killed): such a folder is refused.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from pipeline.core.errors import ImageError, InputError

MANIFEST = "manifest.csv"
DATASET = "dataset.json"
SUMMARY = "summary.json"
INCOMPLETE = ".incomplete"  # present while a fetch is writing the folder; removed after the manifest
SIDECARS = {MANIFEST, DATASET, SUMMARY}  # the dataset's own files, not items
COLUMNS = ["url", "path", "class", "split", "status", "reason", "http_status", "bytes", "sha256", "width", "height", "format", "elapsed_ms"]
NUMERIC = ["http_status", "bytes", "width", "height", "elapsed_ms"]
SHARDS_DIR = "shards"  # the shard layout's tars, per-shard manifests and stats
FINAL_MANIFEST = "manifest.parquet"  # the shard layout's manifest, dedupe and split settled
SHARD_SUFFIX = ".tar"
MEMBER_SEP = "#"  # `shards/00000.tar#<member>`: a stored item's path in the shard layout


def check_complete(root: Path) -> None:
    """Refuse a folder that a fetch started and did not finish (killed, failed): its files are a
    fraction of the dataset, and reading them as one would give a silently different split."""
    if (root / INCOMPLETE).exists():
        raise InputError(f"{root} is an unfinished fetch (it was interrupted or failed): run `pipeline fetch` again to complete it")


def read_manifest(root: Path) -> pd.DataFrame | None:
    """The manifest of a fetched dataset, or None for a plain folder of class subfolders."""
    path = root / MANIFEST
    if not path.exists():
        return None
    return pd.read_csv(path, dtype={"url": str, "path": str, "class": str, "split": str, "reason": str}, keep_default_na=False)


def read_classes(root: Path) -> list[str] | None:
    """The class order a source declared (e.g. cats-dogs: dog = 0, cat = 1), or None."""
    path = root / DATASET
    return json.loads(path.read_text())["classes"] if path.exists() else None


def read_source(root: Path) -> str | None:
    """The source that fetched the dataset (dataset.json), or None for a plain folder."""
    path = root / DATASET
    return json.loads(path.read_text()).get("source") if path.exists() else None


# --- The shard layout ------------------------------------------------------------------------------


def layout(root: Path) -> str:
    """`shards` when dataset.json says so, else `folder` (every older or plain dataset)."""
    path = root / DATASET
    if not path.exists():
        return "folder"
    try:
        value = json.loads(path.read_text()).get("layout", "folder")
    except (OSError, ValueError, AttributeError):
        raise InputError(f"{path} is damaged (not JSON): run `pipeline fetch` again") from None
    if value not in ("folder", "shards"):
        raise InputError(f"{path}: unknown layout {value!r}; valid choices: folder, shards")
    return value


def shard_names(root: Path) -> list[str]:
    """The shards (`NNNNN`) of a shard-layout dataset, sorted: every `shards/<name>.tar`."""
    folder = root / SHARDS_DIR
    if not folder.is_dir():
        raise InputError(f"{root}: dataset.json says layout shards but {folder} is missing")
    return sorted(p.name[: -len(SHARD_SUFFIX)] for p in folder.iterdir() if p.name.endswith(SHARD_SUFFIX) and not p.name.startswith("."))


def read_final_manifest(root: Path) -> pd.DataFrame:
    """The final manifest of a shard-layout dataset (every row, COLUMNS; text columns as str with
    "" for none, counts as nullable integers). Refuses an unfinished fetch."""
    check_complete(root)
    path = root / FINAL_MANIFEST
    if not path.exists():
        raise InputError(f"{path} is missing: the shard dataset is unfinished or damaged; run `pipeline fetch` again")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"{path} cannot be read ({type(exc).__name__}): run `pipeline fetch` again") from None
    missing = [c for c in ("path", "class", "split", "status") if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: columns {missing} are missing (expected {', '.join(COLUMNS)})")
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
        if column not in NUMERIC:
            frame[column] = frame[column].fillna("").astype(str)
    return frame[COLUMNS].reset_index(drop=True)


def split_member(path: str) -> tuple[str, str]:
    """(`NNNNN`, member) of a shard-layout path `shards/<NNNNN>.tar#<member>`; InputError otherwise.
    (Plain string checks: this runs once per item.)"""
    tar, sep, member = path.partition(MEMBER_SEP)
    head, tail = f"{SHARDS_DIR}/", SHARD_SUFFIX
    shard = tar[len(head) : -len(tail)] if tar.startswith(head) and tar.endswith(tail) else ""
    if not sep or not shard or "/" in shard or shard.startswith(".") or not member or "/" in member:
        raise InputError(f"manifest path {path!r} is not a stored shard item (shards/<NNNNN>.tar#<member>)")
    return shard, member


def member_path(shard: str, member: str) -> str:
    return f"{SHARDS_DIR}/{shard}{SHARD_SUFFIX}{MEMBER_SEP}{member}"


def iter_shard_images(root: Path, shard: str, max_bytes: int, wanted: set[str] | None = None) -> Iterator[tuple[str, bytes | ImageError]]:
    """Stream the members of `shards/<shard>.tar` in tar order with `tarfile`: (member name, its
    bytes), only for regular members (links, folders and devices are never read) and, with `wanted`,
    only for those names (the others are skipped unread). A member over `max_bytes` comes as an
    ImageError value instead of bytes (recorded, not raised). The tar itself is opened without
    following a symbolic link; a damaged tar raises InputError where it breaks.
    """
    path = root / SHARDS_DIR / f"{shard}{SHARD_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InputError(f"{path}: cannot open the shard ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            for info in tar:
                if not info.isreg() or (wanted is not None and info.name not in wanted):
                    continue
                if info.size > max_bytes:
                    yield info.name, ImageError(f"too large: {info.size} bytes > {max_bytes}")
                    continue
                data = tar.extractfile(info).read()
                if len(data) < info.size:
                    raise tarfile.ReadError(f"member {info.name} is truncated")
                yield info.name, data
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{path}: damaged shard ({str(exc)[:160]}): run `pipeline fetch` again") from None


def stored_items(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The usable items of a shard-layout dataset: the final manifest's `ok` rows in its order, with
    `shard` and `member` columns added; and the (path, reason) of `ok` rows whose path names no
    stored shard item (left out, recorded). Refuses an unfinished fetch and a missing shard."""
    ok = read_final_manifest(root)
    ok = ok[ok["status"] == "ok"].reset_index(drop=True)
    located, bad = [], []
    for path in ok["path"]:
        try:
            located.append(split_member(path))
        except InputError:
            located.append(None)
            bad.append((path, "path is not a stored shard item (shards/<NNNNN>.tar#<member>)"))
    keep = [loc is not None for loc in located]
    ok = ok[keep].reset_index(drop=True)
    ok["shard"] = [loc[0] for loc in located if loc is not None]
    ok["member"] = [loc[1] for loc in located if loc is not None]
    missing = sorted(set(ok["shard"]) - set(shard_names(root)))
    if missing:
        raise InputError(f"{root}: the manifest lists items in shards {', '.join(missing[:3])} but {SHARDS_DIR}/{missing[0]}{SHARD_SUFFIX} is missing; run `pipeline fetch` again")
    return ok, bad
