"""The fetched-dataset format: what `fetch` writes and `survey-shapes` and `prepare` read.

Two layouts; `layout(root)` tells which (dataset.json's "layout", "folder" when absent).

**folder** (small data, every source): `<out>/<class>/<file>` with `manifest.csv`, one row per
candidate item whatever happened to it: `status` is `ok`, `duplicate`, `skipped` or `failed`, and
`reason` says why for anything but `ok`; `dataset.json` (the source and its class order: label i =
classes[i]); `summary.json` (counts by status and reason). Any other folder of class subfolders is
read as a dataset without a manifest.

**shards** (URL lists of millions: imagenet with `fetch.layout: shards`, or `auto` above 50,000
candidate URLs; written by pipeline.fetch.shards):

- `shards/<NNNNN>.tar`: a webdataset tar, one sample per fetched image that passed the checks
  (status ok before duplicates are settled), in candidate order. Key `<NNNNN><IIIII>` (shard
  number, then the URL's 5-digit place in the shard); members `<key>.<ext>`, the original bytes
  (ext from the detected format: jpg, png, gif, bmp, tif, webp) and `<key>.json`, {"url", "class",
  "sha256", "width", "height", "format"}. Members are written with mtime 0: same input, same bytes.
- `shards/<NNNNN>.parquet`: the shard task's manifest rows for every URL of the shard, failures
  too, in candidate order; columns COLUMNS; `path` = `shards/<NNNNN>.tar#<key>.<ext>` for stored
  items, "" otherwise; `split` is "" (not yet decided).
- `shards/<NNNNN>.stats.json`: {"shard", "rows", "fingerprint", "counts", "reasons", "bytes",
  "seconds", "cpu_seconds"}, written last: the shard's done marker.
- `manifest/<NNNNN>.parquet`: the final manifest, one file per shard, the same rows in the same
  order with duplicates and the split settled (`status` duplicate with `path` = the owner's
  member, `split` train / val / extra for ok rows). `pd.read_parquet(root / "manifest")` reads all.
- `dataset.json` (source, classes, "layout": "shards", "shards": count), `summary.json` as above.

In both layouts `.incomplete` is present while a fetch writes the folder; readers refuse it.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from pipeline.core.errors import InputError

MANIFEST = "manifest.csv"
DATASET = "dataset.json"
SUMMARY = "summary.json"
INCOMPLETE = ".incomplete"  # present while a fetch is writing the folder; removed after the manifest
SHARDS = "shards"  # shard layout: tars, per-shard parquet rows and stats
MANIFEST_DIR = "manifest"  # shard layout: the settled manifest, one parquet file per shard
SIDECARS = {MANIFEST, DATASET, SUMMARY}  # the dataset's own files, not items
COLUMNS = ["url", "path", "class", "split", "status", "reason", "http_status", "bytes", "sha256", "width", "height", "format", "elapsed_ms"]
NUMERIC = ["http_status", "bytes", "width", "height", "elapsed_ms"]


def check_complete(root: Path) -> None:
    """Refuse a folder that a fetch started and did not finish (killed, failed): its files are a
    fraction of the dataset, and reading them as one would give a silently different split."""
    if (root / INCOMPLETE).exists():
        raise InputError(f"{root} is an unfinished fetch (it was interrupted or failed): run `pipeline fetch` again to complete it")


def read_manifest(root: Path) -> pd.DataFrame | None:
    """The manifest of a fetched dataset, or None for a plain folder of class subfolders.

    For the shard layout this reads every shard's rows into one frame: fine for thousands of
    rows, not for millions (read `manifest/<NNNNN>.parquet` shard by shard instead)."""
    if layout(root) == "shards":
        return pd.concat([read_parquet_frame(root / MANIFEST_DIR / f"{shard_name(n)}.parquet") for n in list_shards(root)], ignore_index=True)
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


# --- The shard layout ---------------------------------------------------------------------------


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def layout(root: Path) -> str:
    """"shards" or "folder" (also for a plain folder of class subfolders)."""
    path = root / DATASET
    if path.exists():
        return json.loads(path.read_text()).get("layout", "folder")
    return "folder"


def list_shards(root: Path) -> list[int]:
    """The shard numbers of a shard-layout dataset, in order (each has a settled manifest file)."""
    return sorted(int(p.name.split(".")[0]) for p in (root / MANIFEST_DIR).glob("*.parquet") if p.name.split(".")[0].isdigit())


def read_parquet_frame(path: Path) -> pd.DataFrame:
    """A manifest parquet file as a frame: integer columns stay integers (nullable Int64)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def shard_manifest(root: Path, shard: int) -> pd.DataFrame:
    """The settled manifest rows of one shard (every URL, in candidate order)."""
    return read_parquet_frame(root / MANIFEST_DIR / f"{shard_name(shard)}.parquet")


def iter_shard_items(root: Path, shard: int) -> Iterator[tuple[str, str, str, bytes]]:
    """(key, class, split, bytes) of each usable, distinct image of one shard, in candidate order:
    the tar members whose settled row is ok (duplicates and failures are left out)."""
    rows = shard_manifest(root, shard)
    rows = rows[rows["status"] == "ok"]
    wanted = {path.split("#", 1)[1]: (cls, split) for path, cls, split in zip(rows["path"], rows["class"], rows["split"])}
    with tarfile.open(root / SHARDS / f"{shard_name(shard)}.tar") as tar:
        for member in tar:
            if member.name in wanted:
                cls, split = wanted[member.name]
                yield member.name.rsplit(".", 1)[0], cls, split, tar.extractfile(member).read()
