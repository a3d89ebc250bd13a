"""The plan of a URL-list fetch: every distinct candidate (class, url), in candidate order, on disk.

The candidate rows stream in from a URL-list reader and are written to an Arrow file,
`<out>/.plan/plan.arrow`, in candidate order; a URL listed twice for the same class counts once (its
first place). What stays in memory is 16 bytes per candidate while planning (two int32 columns:
class, rank in its class; a 64-bit hash to find repeated URLs) and 8 afterwards: about 115 MB for
the 14.2M lines of fall11_urls.txt, never the URLs themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

PLAN_DIR = ".plan"
BATCH = 65_536  # rows per Arrow record batch of the plan
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


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
    cls_parts.clear()  # (the concatenated copy is all that is needed)
    hashes = np.concatenate(hash_parts) if hash_parts else np.zeros(0, np.uint64)
    hash_parts.clear()
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
