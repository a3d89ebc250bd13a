"""One shard, one task: fetch and check a shard's URLs, write the images with the layout's writer,
then the shard's record, the same in every layout.

A shard is up to `fetch.shard_size` candidate URLs of one wave, in candidate order. Its task
(`fetch_shard`, a top-level function: the local process pool and Dask pickle it by reference)
downloads them on `fetch.download.concurrency` threads over one HTTP client per process, judges
each (pipeline.fetch.checks), hands the images to the writer (pipeline.fetch.writers) and writes,
each under a temporary name renamed when complete, in the writer's records folder:

- `<NNNNN>.parquet`: a manifest row for every URL of the shard, in candidate order (COLUMNS;
  `split` empty: the split is settled after all waves);
- `<NNNNN>_stats.json`, last: the done marker, with the `fingerprint` of the shard's (class, url)
  rows. A rerun skips every shard whose marker names the same URLs (`finished`): that is the only
  resume record, for every layout. Failed URLs of a finished shard are final (img2dataset's rule).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.core.checkpoint import checkpoint
from pipeline.core.console import advance
from pipeline.core.dataset import shard_name
from pipeline.core.files import write_json
from pipeline.fetch.checks import judge
from pipeline.fetch.http import Client
from pipeline.fetch.manifest import reason_kind, rows_table, write_parquet
from pipeline.fetch.params import DownloadSettings
from pipeline.fetch.writers import WRITERS


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to fetch one shard (small and picklable: rows are ~10,000 URLs)."""

    out: str  # the dataset folder, as every worker sees it
    layout: str  # a key of WRITERS
    shard: int
    rows: list[tuple[str, str]]  # (class, url) in candidate order
    labels: dict[str, int]  # class -> index in the dataset's class order, for the shard's classes
    settings: DownloadSettings


@dataclass(frozen=True)
class ShardDone:
    shard: int
    rows: int
    counted: bool  # whether this process's progress bar already counted its URLs one by one


def fingerprint(rows: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for cls, url in rows:
        digest.update(f"{cls}\t{url}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def records(out: Path, layout: str) -> Path:
    """The folder of the shards' records (parquet rows and stats) in `layout`."""
    return out / WRITERS[layout].records


def rows_path(out: Path, layout: str, shard: int) -> Path:
    return records(out, layout) / f"{shard_name(shard)}.parquet"


def stats_path(out: Path, layout: str, shard: int) -> Path:
    return records(out, layout) / f"{shard_name(shard)}_stats.json"  # (img2dataset's name)


def finished(out: Path, layout: str, shard: int, rows: list[tuple[str, str]], deep: bool = False) -> dict | None:
    """The stats of a shard a run already finished for these same URLs and whose record and images
    are whole, else None (to fetch again): the rows readable and as many as the stats say, the
    images as the layout's writer recorded them (`damage`); with `deep`, every image re-hashed."""
    try:
        stats = json.loads(stats_path(out, layout, shard).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(stats, dict) and stats.get("fingerprint") == fingerprint(rows)):
        return None
    try:
        table = pq.read_table(rows_path(out, layout, shard), columns=["path", "status", "bytes", "sha256"])
    except Exception:  # pyarrow raises several kinds for a missing, cut or garbled file
        return None
    if table.num_rows != stats.get("rows") or WRITERS[layout].damage(out, shard, table, stats, deep):
        return None
    return stats


_CLIENTS: dict = {}  # one HTTP client per worker process (connections reused across shards)


def _client(settings: DownloadSettings) -> Client:
    key = settings.model_dump_json()
    if key not in _CLIENTS:
        for old in _CLIENTS.values():
            old.close()
        _CLIENTS.clear()
        _CLIENTS[key] = Client(settings, guarded=True)  # URLs from a list: public addresses only
    return _CLIENTS[key]


def _each(work: Callable[[int], None], n: int, threads: int) -> None:
    """`work(i)` for i in 0..n-1 on `threads` threads, each taking the next i as it finishes one (no
    future per item: a shard has 10,000), the first exception raised here once all have stopped."""
    numbers, lock, failed = iter(range(n)), threading.Lock(), []

    def run() -> None:
        while not failed:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            try:
                work(i)
            except BaseException as exc:  # re-raised below, in the caller's thread
                failed.append(exc)

    pool = [threading.Thread(target=run, name=f"fetch-{k}", daemon=True) for k in range(max(1, min(threads, n)))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failed:
        raise failed[0]


def fetch_shard(task: ShardTask) -> ShardDone:
    """Fetch and check every URL of one shard; write its images, rows and (last) stats."""
    start, cpu = time.monotonic(), time.process_time()
    out, settings = Path(task.out), task.settings
    client = _client(settings)
    writer = WRITERS[task.layout](out, task.shard, task.labels)
    name = shard_name(task.shard)
    rows: list[dict] = [{}] * len(task.rows)
    counted = []

    def work(i: int) -> None:
        cls, url = task.rows[i]
        row, data, info = judge(client.get(url), cls, settings)
        row["key"], row["path"] = f"{name}{i:05d}", ""
        if data is not None:
            writer.write(i, row, data, info)
        rows[i] = row
        counted.append(advance())

    try:
        _each(work, len(task.rows), settings.concurrency)
        facts = writer.close()
    except BaseException:
        writer.abort()
        raise
    write_parquet(rows_path(out, task.layout, task.shard), rows_table(rows))
    checkpoint("fetch.rows")
    stats = {
        "shard": task.shard,
        "rows": len(rows),
        "fingerprint": fingerprint(task.rows),
        "counts": dict(sorted(Counter(row["status"] for row in rows).items())),
        "reasons": dict(
            sorted(Counter(reason_kind(row["error_message"]) for row in rows if row["status"] != "success").items())
        ),
        "bytes": sum(row["bytes"] for row in rows if row["status"] == "success"),
        "seconds": round(time.monotonic() - start, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        **facts,
    }
    write_json(stats_path(out, task.layout, task.shard), stats)  # last: the shard is done
    return ShardDone(task.shard, len(rows), all(counted))
