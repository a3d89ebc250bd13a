"""The shard layout: URL lists of millions, planned on disk, fetched one shard per task.

Three steps (format on disk: pipeline.core.dataset):

1. Plan (`make_plan`). The candidate (class, url) rows stream in from a URL-list reader and are
   written to an Arrow file, `<out>/.plan/plan.arrow`, in candidate order; a URL listed twice for
   the same class counts once (its first place). What stays in memory is 16 bytes per candidate
   while planning (two int32 columns: class, rank in its class; a 64-bit hash to find repeated
   URLs) and 8 afterwards: about 115 MB for the 14.2M lines of fall11_urls.txt, never the URLs
   themselves.
2. Waves of shards (`collect_shards`). As in the folder layout (pipeline.fetch.collect), each wave
   tries, per class, as many untried candidates as images are still missing, so which URLs are
   tried is the same whatever order downloads finish in. A wave's candidates, in candidate order,
   are cut into shards of `fetch.shard_size` URLs; each shard is one task (`fetch_shard`) on the
   engine (pipeline.core.engine: a local process pool, or Dask). Between waves, duplicates and
   counts are settled with group-bys over the ok rows only, whose cost grows with rows, not rows x
   classes.
3. Settle. Duplicates (same content from two URLs; the first in class order, then candidate order,
   keeps it) and the train/val split are decided exactly as in the folder layout, then written as
   `manifest/<NNNNN>.parquet`, one per shard, streamed shard by shard.

A shard task downloads its URLs on a pool of threads with one urllib3 pool manager per process
(`fetch.download.concurrency` threads per task), checks them as the folder layout does (same
caps, retries, placeholder and magic-byte checks, decode; `pipeline.fetch.collect.judge`), and
writes, each under a temporary name renamed when complete: `shards/<NNNNN>.tar` (webdataset: the
original bytes of each usable image, in candidate order), `shards/<NNNNN>.parquet` (a manifest row
for every URL of the shard) and, last, `shards/<NNNNN>.stats.json`, the done marker. A rerun skips
every shard whose stats file exists and names the same URLs (its `fingerprint`); there is no
journal. Downloaded bodies go to a spill file as they arrive, in any order, and are copied into
the tar in candidate order at the end, so a slow URL never holds the others' bytes in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from pipeline.core.config import DownloadSettings
from pipeline.core.console import progress
from pipeline.core.dataset import (
    COLUMNS,
    DATASET,
    MANIFEST_DIR,
    NUMERIC,
    SHARDS,
    SUMMARY,
    read_parquet_frame,
    shard_name,
)
from pipeline.core.files import write_atomic, write_json
from pipeline.core.images import EXTENSIONS

PLAN_DIR = ".plan"
AUTO_SHARDS = 50_000  # layout auto: shards above this many candidate URLs, class folders up to it
BATCH = 65_536  # rows per Arrow record batch of the plan
TASK_MODULES = ("pipeline.fetch.collect", "pipeline.fetch.download", "pipeline.core.images")  # what fetch_shard imports
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

SCHEMA = pa.schema([(name, pa.int64() if name in NUMERIC else pa.string()) for name in COLUMNS])


# --- 1. Plan ------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Every distinct candidate, in candidate order: URLs on disk, class and rank in memory."""

    path: Path  # Arrow IPC file with one column, url
    classes: list[str]
    cls: np.ndarray  # int32: index into `classes` of each candidate
    rank: np.ndarray  # int32: position of each candidate in its class's list
    counts: np.ndarray  # int64: candidates per class
    _table: list | None = field(default=None, repr=False)  # the url column's batches, memory-mapped
    _starts: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.cls)

    def urls(self, rows: np.ndarray) -> list[str]:
        """The URLs of plan rows `rows`, in that order, read batch by batch from the memory-mapped
        file (only the batches they fall in are touched; nothing is concatenated)."""
        if self._table is None:
            reader = ipc.open_file(pa.memory_map(str(self.path)))
            self._table = [reader.get_batch(i).column(0) for i in range(reader.num_record_batches)]
            self._starts = np.cumsum([0] + [len(batch) for batch in self._table])
        rows = np.asarray(rows, np.int64)
        which = np.searchsorted(self._starts, rows, side="right") - 1
        out: list[str] = [""] * len(rows)
        for batch in np.unique(which):
            at = np.flatnonzero(which == batch)
            for position, url in zip(
                at.tolist(), self._table[batch].take(pa.array(rows[at] - self._starts[batch])).to_pylist()
            ):
                out[position] = url
        return out

    def lists(self) -> dict[str, list[str]]:
        """Each class's candidate list: for the folder layout (small lists only)."""
        urls = self.urls(np.arange(len(self)))
        lists: dict[str, list[str]] = {cls: [] for cls in self.classes}
        for index, url in zip(self.cls.tolist(), urls):
            lists[self.classes[index]].append(url)
        return lists


def make_plan(rows: Iterable[tuple[str, str]], classes: list[str], folder: Path, batch: int = BATCH) -> Plan:
    """Stream (class, url) rows into a plan under `folder`; rows of other classes are ignored.

    Two passes over disk, never a list of all rows: the first writes the rows as they come and
    keeps a 64-bit hash of each (class, url); the second keeps the first place of each (rows whose
    hashes collide would be merged: odds about 1 in 200,000 for 14M rows) and numbers each class's
    candidates.
    """
    folder.mkdir(parents=True, exist_ok=True)
    index = {cls: i for i, cls in enumerate(classes)}
    raw_path = folder / "raw.arrow"
    schema = pa.schema([("url", pa.string())])
    cls_parts: list[np.ndarray] = []
    hash_parts: list[np.ndarray] = []
    with ipc.new_stream(str(raw_path), schema) as raw:
        cls_buf: list[int] = []
        url_buf: list[str] = []

        def flush() -> None:
            urls = np.asarray(url_buf, dtype=object)
            ids = np.asarray(cls_buf, dtype=np.int32)
            hashes = pd.util.hash_array(urls) ^ (ids.astype(np.uint64) * _GOLDEN)
            raw.write_batch(pa.record_batch([pa.array(url_buf, pa.string())], schema=schema))
            cls_parts.append(ids)
            hash_parts.append(hashes)
            cls_buf.clear()
            url_buf.clear()

        for cls, url in rows:
            i = index.get(cls)
            if i is None:
                continue
            cls_buf.append(i)
            url_buf.append(url)
            if len(url_buf) >= batch:
                flush()
        if url_buf:
            flush()
    ids = np.concatenate(cls_parts) if cls_parts else np.zeros(0, np.int32)
    del cls_parts
    hashes = np.concatenate(hash_parts) if hash_parts else np.zeros(0, np.uint64)
    del hash_parts
    keep = _first_places(hashes)
    del hashes
    ids = ids[keep]
    rank = _rank_in_class(ids, len(classes))
    path = folder / "plan.arrow"
    # Plain reads, not a memory map: the mapped pages of a 1 GB file would count as resident.
    with (
        pa.OSFile(str(raw_path)) as raw_file,
        ipc.open_stream(raw_file) as source,
        ipc.new_file(str(path), schema) as plan,
    ):
        start = 0
        for batch in source:
            mask = keep[start : start + batch.num_rows]
            start += batch.num_rows
            if mask.any():
                plan.write_batch(batch.filter(pa.array(mask)))
    raw_path.unlink()
    return Plan(path, classes, ids, rank, np.bincount(ids, minlength=len(classes)).astype(np.int64))


def _first_places(hashes: np.ndarray, buckets: int = 16) -> np.ndarray:
    """True at the first row of each distinct hash. Sorted bucket by bucket (by the hash's top
    bits), so the sort's copies are a sixteenth of the rows at a time."""
    keep = np.zeros(len(hashes), bool)
    bucket_of = (hashes >> np.uint64(60)).astype(np.uint8)
    for bucket in range(buckets):
        rows = np.flatnonzero(bucket_of == bucket)
        keep[rows[np.unique(hashes[rows], return_index=True)[1]]] = True
    return keep


def _rank_in_class(ids: np.ndarray, n_classes: int, chunk: int = 1 << 20) -> np.ndarray:
    """Position of each row among the rows of its class: a group-by cumcount, chunk by chunk with a
    running count per class, so its temporaries are a chunk's, not all rows'."""
    seen = np.zeros(n_classes, np.int64)
    rank = np.empty(len(ids), np.int32)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        order = np.argsort(part, kind="stable")
        counts = np.bincount(part, minlength=n_classes)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        local = np.empty(len(part), np.int64)
        local[order] = np.arange(len(part)) - starts[part[order]]
        rank[start : start + chunk] = local + seen[part]
        seen += counts
    return rank


# --- 2. One shard, one task ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to fetch one shard (small and picklable: rows are ~10,000 URLs)."""

    out: str  # the dataset folder, as every worker sees it
    shard: int
    rows: list[tuple[str, str]]  # (class, url) in candidate order
    settings: DownloadSettings
    threads: int

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rows)


def fingerprint(rows: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for cls, url in rows:
        digest.update(f"{cls}\t{url}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def stats_path(out: Path, shard: int) -> Path:
    return out / SHARDS / f"{shard_name(shard)}.stats.json"


def finished(out: Path, shard: int, rows: list[tuple[str, str]]) -> dict | None:
    """The stats of a shard a run already finished for these same URLs, else None."""
    path = stats_path(out, shard)
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return (
        stats
        if stats.get("fingerprint") == fingerprint(rows) and (out / SHARDS / f"{shard_name(shard)}.parquet").exists()
        else None
    )


_POOLS: dict = {}  # one urllib3 pool manager per worker process (connections reused across shards)


def _pool(settings: DownloadSettings, threads: int):
    from pipeline.fetch.download import make_pool

    key = (settings.model_dump_json(), threads)
    if key not in _POOLS:
        _POOLS.clear()
        _POOLS[key] = make_pool(settings, threads)
    return _POOLS[key]


def fetch_shard(task: ShardTask) -> dict:
    """Fetch and check every URL of one shard; write its tar, parquet and (last) stats; return the stats."""
    from pipeline.fetch.collect import judge
    from pipeline.fetch.download import get_bytes

    start, cpu = time.monotonic(), time.process_time()
    folder = Path(task.out) / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    name = shard_name(task.shard)
    settings = task.settings
    pool = _pool(settings, task.threads)
    rows: list[dict | None] = [None] * len(task.rows)
    spill_path = folder / f".{name}.spill.tmp"
    lock = threading.Lock()
    with open(spill_path, "w+b") as spill:

        def work(i: int) -> None:
            cls, url = task.rows[i]
            row, data, _ = judge(get_bytes(pool, url, settings), cls, settings)
            if data is not None:
                with lock:
                    offset = spill.seek(0, os.SEEK_END)
                    spill.write(data)
                row["_at"] = (offset, len(data))
            rows[i] = row

        with ThreadPoolExecutor(max_workers=max(1, task.threads)) as threads:
            list(threads.map(work, range(len(task.rows))))
        spill.flush()
        tar_tmp = folder / f".{name}.tar.tmp"
        with tarfile.open(tar_tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i, row in enumerate(rows):
                at = row.pop("_at", None)
                if at is None:
                    row["path"] = ""
                    continue
                key = f"{name}{i:05d}"
                ext = EXTENSIONS[row["format"]]
                meta = {k: row[k] for k in ("url", "class", "sha256", "width", "height", "format")}
                _add(tar, f"{key}.{ext}", os.pread(spill.fileno(), at[1], at[0]))
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                row["path"] = f"{SHARDS}/{name}.tar#{key}.{ext}"
    os.replace(tar_tmp, folder / f"{name}.tar")
    spill_path.unlink()
    table = rows_table(rows)
    _write_parquet(folder / f"{name}.parquet", table)
    stats = {
        "shard": task.shard,
        "rows": len(rows),
        "fingerprint": task.fingerprint,
        "counts": dict(sorted(Counter(row["status"] for row in rows).items())),
        "reasons": dict(sorted(Counter(_kind(row["reason"]) for row in rows if row["status"] != "ok").items())),
        "bytes": sum(row["bytes"] for row in rows if row["status"] == "ok"),
        "seconds": round(time.monotonic() - start, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
    }
    write_json(stats_path(Path(task.out), task.shard), stats)  # last: the shard is done
    return stats


def _kind(reason: str) -> str:
    from pipeline.fetch.manifest import reason_kind

    return reason_kind(reason)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0  # no clock in the bytes: same input, same tar
    tar.addfile(info, io.BytesIO(data))


def rows_table(rows: list[dict]) -> pa.Table:
    """Manifest rows as an Arrow table with exactly COLUMNS (ints stay ints, blanks are nulls)."""
    columns = {}
    for name in COLUMNS:
        values = [row.get(name, "") for row in rows]
        if name in NUMERIC:
            values = [None if value in ("", None) else int(value) for value in values]
        else:
            values = ["" if value is None else str(value) for value in values]
        columns[name] = pa.array(values, SCHEMA.field(name).type)
    return pa.table(columns, schema=SCHEMA)


def _write_parquet(path: Path, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    write_atomic(path, buf.getvalue().to_pybytes())


# --- 3. Waves and the settled manifest ----------------------------------------------------------


def _ok_rows(out: Path, shard: int, index: dict[str, int]) -> pd.DataFrame:
    """The ok rows of one finished shard, with their place (shard, idx) and class index."""
    # Strings stay in Arrow buffers (pandas' pyarrow-backed dtype), not one Python object each:
    # about 190 bytes per ok row, for the settling between waves.
    table = pq.read_table(
        out / SHARDS / f"{shard_name(shard)}.parquet", columns=["url", "class", "status", "sha256", "path"]
    )
    keep = pc.equal(table.column("status"), "ok")
    idx = pa.array(np.arange(table.num_rows, dtype=np.int32)).filter(keep).to_numpy()
    table = table.filter(keep)
    strings = pd.ArrowDtype(pa.string())
    return pd.DataFrame(
        {
            "ci": np.array([index[c] for c in table.column("class").to_pylist()], np.int32),
            "shard": np.full(len(idx), shard, np.int32),
            "idx": idx,
            "sha256": pd.Series(table.column("sha256").combine_chunks(), dtype=strings),
            "url": pd.Series(table.column("url").combine_chunks(), dtype=strings),
            "path": pd.Series(table.column("path").combine_chunks(), dtype=strings),
        }
    )


def settle(ok: pd.DataFrame, totals: np.ndarray, trains: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Duplicates and splits of all ok rows so far, decided as the folder layout decides them.

    Sorted by (class index, candidate order): the first row of each content owns it; the owners
    of each class are train up to its train quota, then val, then extra. Returns the decisions
    (shard, idx, split, owner url and path for duplicates) and the distinct images per class.
    """
    ok = ok.sort_values(["ci", "shard", "idx"], kind="stable").reset_index(drop=True)
    dup = ok["sha256"].duplicated(keep="first").to_numpy()
    owners = ok[~dup]
    n = owners.groupby("ci", sort=False).cumcount().to_numpy()
    ci = owners["ci"].to_numpy()
    split = np.where(n < trains[ci], "train", np.where(n < totals[ci], "val", "extra"))
    decisions = ok[["shard", "idx"]].copy()
    decisions["split"] = ""
    decisions.loc[~dup, "split"] = split
    decisions["duplicate_of"] = ""
    decisions["owner_path"] = ""
    if dup.any():
        by_sha = owners.set_index("sha256")
        copies = ok.loc[dup, "sha256"]
        decisions.loc[dup, "duplicate_of"] = by_sha.loc[copies, "url"].to_numpy()
        decisions.loc[dup, "owner_path"] = by_sha.loc[copies, "path"].to_numpy()
    have = np.bincount(ci, minlength=len(totals))
    return decisions.sort_values(["shard", "idx"]).reset_index(drop=True), have


@dataclass(frozen=True)
class Sharding:
    """`fetch.layout`, `fetch.shard_size`, `fetch.engine`, `fetch.scheduler`, `fetch.workers`."""

    layout: str = "auto"
    shard_size: int = 10_000
    engine: str = "local"
    scheduler: str = ""
    workers: int = 0

    def use_shards(self, candidates: int) -> bool:
        return self.layout == "shards" or (self.layout == "auto" and candidates > AUTO_SHARDS)


def _waves(
    plan: Plan, out: Path, settings: DownloadSettings, size: int, engine, totals: np.ndarray, trains: np.ndarray
):
    """Run waves of shards until no class needs more and can get more: each wave takes, per class,
    the next `missing images` untried candidates (vectorised over the plan: O(candidates) per
    wave). Returns the number of shards, candidates tried and distinct images per class, and the
    settled decisions."""
    classes = plan.classes
    index = {cls: i for i, cls in enumerate(classes)}
    consumed = np.zeros(len(classes), np.int64)
    have = np.zeros(len(classes), np.int64)
    ok_parts: list[pd.DataFrame] = []
    decisions = pd.DataFrame(
        {
            "shard": np.zeros(0, np.int32),
            "idx": np.zeros(0, np.int32),
            "split": [],
            "duplicate_of": [],
            "owner_path": [],
        }
    )
    next_shard = 0
    while True:
        upper = np.minimum(consumed + np.maximum(totals - have, 0), plan.counts)
        wave = np.flatnonzero((plan.rank >= consumed[plan.cls]) & (plan.rank < upper[plan.cls]))
        consumed = upper
        if not len(wave):
            break
        first = next_shard
        ids = list(range(first, first + -(-len(wave) // size)))
        next_shard = ids[-1] + 1

        def tasks() -> Iterator[ShardTask]:
            for shard in ids:
                chosen = wave[(shard - first) * size : (shard - first + 1) * size]
                rows = list(zip([classes[i] for i in plan.cls[chosen].tolist()], plan.urls(chosen)))
                if finished(out, shard, rows) is None:  # resume: a finished shard is not fetched again
                    yield ShardTask(str(out), shard, rows, settings, settings.concurrency)

        for _ in progress(
            engine.map(fetch_shard, tasks()), f"Fetching {len(wave)} URLs in {len(ids)} shards", total=len(ids)
        ):
            pass
        ok_parts += [_ok_rows(out, shard, index) for shard in ids]
        ok = pd.concat(ok_parts, ignore_index=True)
        if len(ok):
            decisions, have = settle(ok, totals, trains)
    return next_shard, consumed, have, decisions


def collect_shards(plan: Plan, quotas: dict, out: Path, settings: DownloadSettings, source: str, sharding: Sharding):
    """Fetch in waves of shards until each class has its quota or runs out of candidates; write the
    settled manifest, dataset.json and summary.json. Returns a FetchResult."""
    if settings.verify == "auto":  # prepare decodes every image of a shard anyway
        settings = settings.model_copy(update={"verify": "header"})
    from pipeline.core.engine import Engine
    from pipeline.fetch.manifest import FetchResult, reason_kind

    classes = plan.classes
    totals = np.array([quotas[cls].total for cls in classes], np.int64)
    trains = np.array([quotas[cls].train for cls in classes], np.int64)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    with Engine(sharding.engine, sharding.scheduler, sharding.workers, TASK_MODULES) as engine:
        next_shard, consumed, have, decisions = _waves(plan, out, settings, sharding.shard_size, engine, totals, trains)
    _remove_stale(out, next_shard)
    counts: Counter = Counter()
    reasons: Counter = Counter()
    starts = (
        np.searchsorted(decisions["shard"].to_numpy(), np.arange(next_shard + 1))
        if len(decisions)
        else np.zeros(next_shard + 1, int)
    )
    (out / MANIFEST_DIR).mkdir(exist_ok=True)
    for shard in progress(range(next_shard), "Writing the manifest", total=next_shard):
        frame = read_parquet_frame(out / SHARDS / f"{shard_name(shard)}.parquet")
        mine = decisions.iloc[starts[shard] : starts[shard + 1]]
        idx = mine["idx"].to_numpy(np.int64)
        if len(idx):
            frame.loc[idx, "split"] = mine["split"].to_numpy()
            copies = mine["duplicate_of"].to_numpy() != ""
            if copies.any():
                rows = idx[copies]
                frame.loc[rows, "status"] = "duplicate"
                frame.loc[rows, "reason"] = ["duplicate of " + url for url in mine["duplicate_of"].to_numpy()[copies]]
                frame.loc[rows, "path"] = mine["owner_path"].to_numpy()[copies]
        counts.update(frame["status"].value_counts().to_dict())
        reasons.update(frame.loc[frame["status"] != "ok", "reason"].map(reason_kind).value_counts().to_dict())
        _write_parquet(
            out / MANIFEST_DIR / f"{shard_name(shard)}.parquet",
            pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False),
        )
    warnings = [
        f"class {cls}: {int(have[i])} of {int(totals[i])} images after trying all {int(consumed[i])} URLs of its list"
        for i, cls in enumerate(classes)
        if have[i] < totals[i]
    ]
    counts_out = {k: int(v) for k, v in sorted(counts.items())}
    reasons_out = {k: int(v) for k, v in sorted(reasons.items())}
    write_json(out / DATASET, {"source": source, "classes": classes, "layout": "shards", "shards": next_shard})
    write_json(out / SUMMARY, {"counts": counts_out, "reasons": reasons_out, "warnings": warnings})
    return FetchResult(out, classes, counts_out, reasons_out, warnings)


def _remove_stale(out: Path, shards: int) -> None:
    """Shard and manifest files of an earlier, larger run (numbered from `shards` up) go."""
    for folder in (out / SHARDS, out / MANIFEST_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            number = path.name.split(".", 1)[0]
            if number.isdigit() and int(number) >= shards:
                path.unlink()
