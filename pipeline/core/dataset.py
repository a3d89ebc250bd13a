"""The fetched-dataset format: what `fetch` writes and `survey-shapes` and `prepare` read.

Two layouts; `layout(root)` tells which (dataset.json's "layout", "folder" when absent). A URL-list
fetch writes either one through the same shard tasks (pipeline.fetch.collect): only the writer of
the images differs, and each shard's record is the same.

**folder** (small data, every source): `<out>/<class>/<file>` with `manifest.csv`, one row per
candidate item whatever happened to it (COLUMNS, img2dataset's names wherever they mean the same:
`url`, `key`, `status`, `error_message`, `width`, `height`, `sha256`): `status` is `success`,
`duplicate`, `skipped`, `failed_to_download` (a URL that gave no body) or `failed` (an archive member
that cannot be read), and `error_message` says why for anything but `success`; `dhash` is the
image's 64-bit difference hash (16 hex digits) from the decode that checked it ("" where none
decoded it: `fetch.download.verify: header`, older fetches), which the audit and `prepare.dedupe:
near` use instead of reading the image again; `key` is a URL's
`<NNNNN><IIIII>` (its shard and place: its sample's key in the shard layout), "" for other sources;
`dataset.json` (the source and its class order: label i = classes[i]); `summary.json` (counts by
status and reason kind). Manifests written before these names (`reason`, status `ok`, no `key`)
are read as current ones (`current`). A URL-list fetch names each image
`<class>/<sha256>.<ext>` and keeps its shards' records in `.shards/` (below). Any other folder of
class subfolders is read as a dataset without a manifest.

**shards** (URL lists of millions: imagenet with `fetch.layout: shards`, or `auto` above 50,000
candidate URLs):

- `shards/<NNNNN>.tar`: a standard webdataset tar, one sample per fetched image that passed the
  checks (status success before duplicates are settled), in candidate order. Key `<NNNNN><IIIII>` (shard
  number, then the URL's 5-digit place in the shard); members `<key>.<ext>`, the original bytes
  (ext from the detected format: jpg, png, gif, bmp, tif, webp), `<key>.cls`, the class index in
  dataset.json's order (decimal text), and `<key>.json`, {"key", "url", "class", "cls", "split",
  "status", "sha256", "width", "height", "format"}, with the settled `split` (train / val / extra;
  "" for a duplicate, whose `status` is duplicate and `duplicate_of` the owner's key), padded with
  spaces to whole 512-byte blocks (pipeline.fetch.writers.TarWriter.settle). Members are written
  with mtime 0: same input, same bytes. `WebDataset(tars).decode(...).to_tuple("jpg", "cls")`
  trains from them; `json["split"]` selects a split.
- `manifest/<NNNNN>.parquet`: the final manifest, one file per shard, the shard's rows in candidate
  order with duplicates and the split settled (`status` duplicate with `path` = the owner's member,
  `split` train / val / extra for success rows). Readers (`stored_items`, `iter_shard_images`) use
  its `success` rows only: duplicates stay in the tars, unused.
- `dataset.json` (source, classes, "layout": "shards", "shards": count), `summary.json` as above.

**A shard's record** (both layouts of a URL-list fetch; in `shards/`, or `.shards/` for folders):
`<NNNNN>.parquet`, the shard task's manifest rows for every URL of the shard, failures too, in
candidate order (COLUMNS; `path` the stored file or `shards/<NNNNN>.tar#<key>.<ext>`, "" for no
image; `split` ""), and `<NNNNN>_stats.json` (img2dataset's name), {"shard", "rows", "fingerprint", "counts", "reasons",
"bytes", "seconds", "cpu_seconds", and in the shard layout "tar_bytes", "members", "tar_format"},
written last: the shard's done marker.

In both layouts `.incomplete` is present while a fetch writes the folder; readers refuse it.
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
SHARDS = "shards"  # shard layout: tars and the shards' records (parquet rows and stats)
MANIFEST_DIR = "manifest"  # shard layout: the settled manifest, one parquet file per shard
SIDECARS = {MANIFEST, DATASET, SUMMARY}  # the dataset's own files, not items
COLUMNS = [
    "url", "key", "path", "class", "split", "status", "error_message", "http_status", "bytes", "sha256", "dhash",
    "width", "height", "format", "elapsed_ms",
]  # fmt: skip
NUMERIC = ["http_status", "bytes", "width", "height", "elapsed_ms"]
SHARD_SUFFIX = ".tar"
MEMBER_SEP = "#"  # `shards/00000.tar#<member>`: a stored item's path in the shard layout


def check_complete(root: Path) -> None:
    """Refuse a folder that a fetch started and did not finish (killed, failed): its files are a
    fraction of the dataset, and reading them as one would give a silently different split."""
    if (root / INCOMPLETE).exists():
        raise InputError(
            f"{root} is an unfinished fetch (it was interrupted or failed): run `pipeline fetch` again to complete it"
        )


def read_manifest(root: Path) -> pd.DataFrame | None:
    """The manifest of a fetched dataset, or None for a plain folder of class subfolders.

    For the shard layout this reads every shard's rows into one frame: fine for thousands of
    rows, not for millions (read `manifest/<NNNNN>.parquet` shard by shard instead)."""
    if layout(root) == "shards":
        return read_final_manifest(root)
    path = root / MANIFEST
    if not path.exists():
        return None
    text = {name: str for name in ("url", "key", "path", "class", "split", "error_message", "reason", "dhash")}
    return current(pd.read_csv(path, dtype=text, keep_default_na=False))


def current(frame: pd.DataFrame) -> pd.DataFrame:
    """A manifest written before the columns took img2dataset's names (`reason`, status `ok`; no
    `key`) or before `dhash`, read as a current one: older datasets need no new fetch (the hashes
    they lack are computed where they are needed)."""
    if "reason" in frame.columns:
        frame = frame.rename(columns={"reason": "error_message"})
        frame["status"] = frame["status"].replace({"ok": "success"})
    if "key" not in frame.columns:
        frame.insert(1, "key", "")
    if "dhash" not in frame.columns and "sha256" in frame.columns:
        frame.insert(frame.columns.get_loc("sha256") + 1, "dhash", "")
    return frame


def read_classes(root: Path) -> list[str] | None:
    """The class order a source declared (e.g. cats-dogs: dog = 0, cat = 1), or None."""
    path = root / DATASET
    return json.loads(path.read_text())["classes"] if path.exists() else None


def read_source(root: Path) -> str | None:
    """The source that fetched the dataset (dataset.json), or None for a plain folder."""
    path = root / DATASET
    return json.loads(path.read_text()).get("source") if path.exists() else None


# --- The shard layout ------------------------------------------------------------------------------


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def read_parquet_frame(path: Path) -> pd.DataFrame:
    """A manifest parquet file as a frame: integer columns stay integers (nullable Int64)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return current(pq.read_table(path).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))


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
    folder = root / SHARDS
    if not folder.is_dir():
        raise InputError(f"{root}: dataset.json says layout shards but {folder} is missing")
    return sorted(
        p.name[: -len(SHARD_SUFFIX)]
        for p in folder.iterdir()
        if p.name.endswith(SHARD_SUFFIX) and not p.name.startswith(".")
    )


def manifest_files(root: Path) -> list[Path]:
    """The settled manifest files of a shard-layout dataset, in shard order."""
    return sorted((root / MANIFEST_DIR).glob("*.parquet"))


def read_final_manifest(root: Path) -> pd.DataFrame:
    """The settled manifest of a shard-layout dataset, every shard's rows in shard order (COLUMNS;
    text columns as str with "" for none, counts as nullable integers). Refuses an unfinished fetch.
    (Reads every row: fine for millions of rows of these few columns; per shard, `read_parquet_frame`.)"""
    check_complete(root)
    files = manifest_files(root)
    if not files:
        raise InputError(
            f"{root / MANIFEST_DIR} has no manifest: the shard dataset is unfinished or damaged; "
            "run `pipeline fetch` again"
        )
    try:
        frame = pd.concat([read_parquet_frame(path) for path in files], ignore_index=True)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(
            f"{root / MANIFEST_DIR} cannot be read ({type(exc).__name__}): run `pipeline fetch` again"
        ) from None
    missing = [c for c in ("path", "class", "split", "status") if c not in frame.columns]
    if missing:
        raise InputError(f"{root / MANIFEST_DIR}: columns {missing} are missing (expected {', '.join(COLUMNS)})")
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
    head, tail = f"{SHARDS}/", SHARD_SUFFIX
    shard = tar[len(head) : -len(tail)] if tar.startswith(head) and tar.endswith(tail) else ""
    if not sep or not shard or "/" in shard or shard.startswith(".") or not member or "/" in member:
        raise InputError(f"manifest path {path!r} is not a stored shard item (shards/<NNNNN>.tar#<member>)")
    return shard, member


def member_path(shard: str, member: str) -> str:
    return f"{SHARDS}/{shard}{SHARD_SUFFIX}{MEMBER_SEP}{member}"


def iter_shard_images(
    root: Path, shard: str, max_bytes: int, wanted: set[str] | None = None
) -> Iterator[tuple[str, bytes | ImageError]]:
    """Stream the members of `shards/<shard>.tar` in tar order with `tarfile`: (member name, its
    bytes), only for regular members (links, folders and devices are never read) and, with `wanted`,
    only for those names (the others are skipped unread). A member over `max_bytes` comes as an
    ImageError value instead of bytes (recorded, not raised). The tar itself is opened without
    following a symbolic link; a damaged tar raises InputError where it breaks.
    """
    path = root / SHARDS / f"{shard}{SHARD_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InputError(f"{path}: cannot open the shard ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every member it has read: a shard's 20,000, ~25 MB
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
    """The usable items of a shard-layout dataset: the final manifest's `success` rows in its order, with
    `shard` and `member` columns added; and the (path, reason) of `success` rows whose path names no
    stored shard item (left out, recorded). Refuses an unfinished fetch and a missing shard."""
    ok = read_final_manifest(root)
    ok = ok[ok["status"] == "success"].reset_index(drop=True)
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
        raise InputError(
            f"{root}: the manifest lists items in shards {', '.join(missing[:3])} but "
            f"{SHARDS}/{missing[0]}{SHARD_SUFFIX} is missing; run `pipeline fetch` again"
        )
    return ok, bad
