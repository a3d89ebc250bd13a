"""Fetch a URL list: plan -> waves of shard tasks -> settle. The one path of every source that
downloads URL lists, whatever the layout; the layout is only the writer (pipeline.fetch.writers).

1. Plan (pipeline.fetch.plan): every distinct candidate, in candidate order, on disk.
2. Waves. Each wave tries, per class, as many untried candidates as images are still missing, so
   which URLs are tried is the same whatever order downloads finish in. A wave's candidates, in
   candidate order, are cut into shards of `fetch.shard_size` URLs; each shard is one task
   (pipeline.fetch.shards) on the engine (pipeline.core.engine: a local process pool, or Dask; a
   wave of one shard runs in this process). Between waves only a few numbers per fetched image are
   kept (class, shard, row, content hash), so memory grows with neither the list nor the images.
3. Settle. Duplicates (the same content from two URLs: the first in class order, then candidate
   order, keeps it) and the train/val split are decided from those numbers, then the manifest is
   written from the shards' rows, shard by shard: `manifest.csv` (folder layout) or
   `manifest/<NNNNN>.parquet` (shard layout); then `summary.json` and `dataset.json`.

Resume: a rerun skips every finished shard (pipeline.fetch.shards.finished); nothing else is
remembered. Formats on disk: pipeline.core.dataset.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.checkpoint import checkpoint
from pipeline.core.console import bar
from pipeline.core.dataset import COLUMNS, DATASET, MANIFEST, MANIFEST_DIR, SUMMARY, read_parquet_frame, shard_name
from pipeline.core.engine import Engine
from pipeline.core.files import walk, write_json
from pipeline.fetch.manifest import FetchResult, reason_kind, write_manifest, write_parquet
from pipeline.fetch.params import FetchParams
from pipeline.fetch.plan import PLAN_DIR, Plan, make_plan
from pipeline.fetch.shards import ShardTask, fetch_shard, finished, records, rows_path
from pipeline.fetch.writers import TarWriter

TASK_MODULES = ("pipeline.fetch.shards",)  # what a worker imports once, before it takes tasks


@dataclass(frozen=True)
class Quota:
    train: int
    val: int = 0

    @property
    def total(self) -> int:
        return self.train + self.val


@dataclass
class Found:
    """What the waves found: per success row (before dedupe) its class index, place and content hash."""

    ci: np.ndarray  # int32
    shard: np.ndarray  # int32
    idx: np.ndarray  # int32: row in its shard
    digest: np.ndarray  # (n, 2) uint64: the first 128 bits of the SHA-256

    @classmethod
    def empty(cls) -> Found:
        return cls(*(np.zeros(0, np.int32) for _ in range(3)), np.zeros((0, 2), np.uint64))

    def add(self, out: Path, layout: str, shard: int, index: dict[str, int]) -> None:
        """The success rows of one finished shard."""
        table = pq.read_table(rows_path(out, layout, shard), columns=["class", "status", "sha256"])
        keep = pc.equal(table.column("status"), "success").to_numpy(zero_copy_only=False)
        idx = np.flatnonzero(keep).astype(np.int32)
        classes = table.column("class").to_pylist()
        digests = [bytes.fromhex(sha[:32]) for sha, ok in zip(table.column("sha256").to_pylist(), keep) if ok]
        self.ci = np.concatenate([self.ci, np.array([index[classes[i]] for i in idx], np.int32)])
        self.shard = np.concatenate([self.shard, np.full(len(idx), shard, np.int32)])
        self.idx = np.concatenate([self.idx, idx])
        self.digest = np.concatenate(
            [self.digest, np.frombuffer(b"".join(digests), ">u8").reshape(-1, 2).astype(np.uint64)]
        )


@dataclass(frozen=True)
class Settled:
    """The decisions, per success row of `Found` sorted by (shard, idx): `split` (train, val, extra;
    "" for a duplicate) and, for a duplicate, the place (shard, idx) of the row that owns its content."""

    shard: np.ndarray
    idx: np.ndarray
    split: np.ndarray  # str
    owner_shard: np.ndarray  # -1 for an owner
    owner_idx: np.ndarray
    have: np.ndarray  # distinct images per class


def settle(found: Found, totals: np.ndarray, trains: np.ndarray) -> Settled:
    """Sorted by (class index, candidate order), the first row of each content owns it; the owners
    of each class are train up to its train quota, then val, then extra."""
    order = np.lexsort((found.idx, found.shard, found.ci))
    ci, shard, idx = found.ci[order], found.shard[order], found.idx[order]
    digests = pd.DataFrame(found.digest[order], columns=["a", "b"])
    dup = digests.duplicated(keep="first").to_numpy()
    first = digests.groupby(["a", "b"], sort=False).ngroup().to_numpy()  # the content's number
    owner_at = np.full(first.max() + 1 if len(first) else 0, -1, np.int64)
    owner_at[first[~dup]] = np.flatnonzero(~dup)
    owner = owner_at[first]
    n = pd.Series(ci[~dup]).groupby(ci[~dup]).cumcount().to_numpy()
    split = np.full(len(ci), "", dtype=object)
    owners_ci = ci[~dup]
    split[~dup] = np.where(n < trains[owners_ci], "train", np.where(n < totals[owners_ci], "val", "extra"))
    owner_shard = np.where(dup, shard[owner], -1)
    owner_idx = np.where(dup, idx[owner], -1)
    back = np.lexsort((idx, shard))
    have = np.bincount(owners_ci, minlength=len(totals))
    return Settled(shard[back], idx[back], split[back], owner_shard[back], owner_idx[back], have)


def fetch_urls(
    rows: Iterable[tuple[str, str]],
    quotas: dict[str, Quota],
    out: Path,
    cfg: FetchParams,
    source: str,
    notes: Callable[[], list[str]] = list,
) -> FetchResult:
    """Fetch the (class, url) `rows` (a stream: never held whole) of the classes of `quotas`, in
    that class order, into the dataset folder `out`: plan, waves, settle (the module docstring).
    `notes()`, asked once the rows are read, gives warnings of the reading to record with the rest."""
    plan_dir = out / PLAN_DIR
    shutil.rmtree(plan_dir, ignore_errors=True)
    try:
        plan = make_plan(rows, list(quotas), plan_dir)
        return collect(plan, quotas, out, cfg, source, notes())
    finally:
        shutil.rmtree(plan_dir, ignore_errors=True)


def collect(
    plan: Plan, quotas: dict[str, Quota], out: Path, cfg: FetchParams, source: str, notes: Sequence[str] = ()
) -> FetchResult:
    """Fetch in waves of shards until each class has its quota or runs out of candidates; write the
    settled manifest, dataset.json and summary.json in the layout `fetch.layout` picks."""
    layout = "shards" if cfg.use_shards(len(plan)) else "folder"
    if cfg.download.verify == "auto":  # shards: prepare decodes every image anyway; folders: decode now
        download = cfg.download.model_copy(update={"verify": "header" if layout == "shards" else "decode"})
        cfg = cfg.model_copy(update={"download": download})
    classes = plan.classes
    totals = np.array([quotas[cls].total for cls in classes], np.int64)
    trains = np.array([quotas[cls].train for cls in classes], np.int64)
    records(out, layout).mkdir(parents=True, exist_ok=True)
    with Engine(cfg, TASK_MODULES) as engine:
        shards, consumed, settled = _waves(plan, out, layout, cfg, engine, totals, trains)
    _remove_stale(out, layout, shards)
    warnings = [*notes] + [
        f"class {cls}: {int(settled.have[i])} of {int(totals[i])} images "
        f"after trying all {int(consumed[i])} URLs of its list"
        for i, cls in enumerate(classes)
        if settled.have[i] < totals[i]
    ]
    frames = _settled_frames(out, layout, shards, settled)
    if layout == "folder":
        rows = pd.concat([pd.DataFrame(columns=COLUMNS), *frames], ignore_index=True)
        result = write_manifest(out, rows, classes, source, warnings)
        _remove_unlisted(out, classes)
        return result
    counts: Counter = Counter()
    reasons: Counter = Counter()
    (out / MANIFEST_DIR).mkdir(exist_ok=True)
    labels = {cls: i for i, cls in enumerate(classes)}
    for shard, frame in enumerate(frames):
        TarWriter.settle(out, shard, frame, labels)
        counts.update(frame["status"].value_counts().to_dict())
        reasons.update(
            frame.loc[frame["status"] != "success", "error_message"].map(reason_kind).value_counts().to_dict()
        )
        write_parquet(out / MANIFEST_DIR / f"{shard_name(shard)}.parquet", frame)
    counts_out = {k: int(v) for k, v in sorted(counts.items())}
    reasons_out = {k: int(v) for k, v in sorted(reasons.items())}
    write_json(out / DATASET, {"source": source, "classes": classes, "layout": "shards", "shards": shards})
    write_json(out / SUMMARY, {"counts": counts_out, "reasons": reasons_out, "warnings": warnings})
    return FetchResult(out, classes, counts_out, reasons_out, warnings)


def _waves(
    plan: Plan, out: Path, layout: str, cfg: FetchParams, engine: Engine, totals: np.ndarray, trains: np.ndarray
):
    """Run waves of shards until no class needs more and can get more: each wave takes, per class,
    the next `missing images` untried candidates (vectorised over the plan: O(candidates) per wave).
    Returns the number of shards, the candidates tried per class and the settled decisions."""
    classes = plan.classes
    index = {cls: i for i, cls in enumerate(classes)}
    consumed = np.zeros(len(classes), np.int64)
    found = Found.empty()
    settled = settle(found, totals, trains)
    next_shard = 0
    while True:
        upper = np.minimum(consumed + np.maximum(totals - settled.have, 0), plan.counts)
        wave = np.flatnonzero((plan.rank >= consumed[plan.cls]) & (plan.rank < upper[plan.cls]))
        consumed = upper
        if not len(wave):
            break
        first, count = next_shard, -(-len(wave) // cfg.shard_size)
        next_shard += count
        with bar(f"Fetching {len(wave):,} URLs in {count:,} shard{'s' * (count > 1)}", len(wave)) as step:
            for done in engine.map(fetch_shard, _tasks(plan, out, layout, cfg, wave, first, count)):
                if not done.counted:
                    step(done.rows)
                checkpoint("fetch.shard")
        for shard in range(first, next_shard):
            found.add(out, layout, shard, index)
        settled = settle(found, totals, trains)
    return next_shard, consumed, settled


def _tasks(
    plan: Plan, out: Path, layout: str, cfg: FetchParams, wave: np.ndarray, first: int, count: int
) -> Iterator[ShardTask]:
    """The wave's shard tasks, made as the engine asks for them; a finished shard (whole: see
    `finished`; re-hashed with `fetch.rehash`) is not fetched again."""
    size = cfg.shard_size
    for k in range(count):
        chosen = wave[k * size : (k + 1) * size]
        numbers = plan.cls[chosen].tolist()
        rows = list(zip([plan.classes[i] for i in numbers], plan.urls(chosen)))
        if finished(out, layout, first + k, rows, cfg.rehash) is None:
            labels = {plan.classes[i]: i for i in set(numbers)}
            where = str(out.resolve())  # the dataset folder as every worker sees it
            yield ShardTask(where, layout, first + k, rows, labels, cfg.download)


def _settled_frames(out: Path, layout: str, shards: int, settled: Settled) -> Iterator[pd.DataFrame]:
    """Each shard's rows with the decisions applied: the split of success rows; duplicates marked, with
    the owner's path and a reason naming the owner's URL."""
    starts = np.searchsorted(settled.shard, np.arange(shards + 1))
    owners = _owners(out, layout, settled)
    for shard in range(shards):
        frame = read_parquet_frame(rows_path(out, layout, shard))
        lo, hi = starts[shard], starts[shard + 1]
        idx = settled.idx[lo:hi].astype(np.int64)
        frame.loc[idx, "split"] = settled.split[lo:hi]
        dup = settled.owner_shard[lo:hi] >= 0
        if dup.any():
            rows = idx[dup]
            urls, paths = zip(
                *(
                    owners[place]
                    for place in zip(settled.owner_shard[lo:hi][dup].tolist(), settled.owner_idx[lo:hi][dup].tolist())
                )
            )
            frame.loc[rows, "status"] = "duplicate"
            frame.loc[rows, "error_message"] = ["duplicate of " + url for url in urls]
            frame.loc[rows, "path"] = list(paths)
        yield frame


def _owners(out: Path, layout: str, settled: Settled) -> dict[tuple[int, int], tuple[str, str]]:
    """(url, path) of every row that owns a duplicate's content, read from its shard's rows."""
    places = sorted(set(zip(settled.owner_shard.tolist(), settled.owner_idx.tolist())) - {(-1, -1)})
    owners = {}
    for shard in sorted({shard for shard, _ in places}):
        table = pq.read_table(rows_path(out, layout, shard), columns=["url", "path"])
        rows = [idx for s, idx in places if s == shard]
        for idx, url, path in zip(
            rows, table.column("url").take(rows).to_pylist(), table.column("path").take(rows).to_pylist()
        ):
            owners[shard, idx] = (url, path)
    return owners


def _remove_stale(out: Path, layout: str, shards: int) -> None:
    """Shard files of an earlier, larger run (numbered from `shards` up) go."""
    for folder in (records(out, layout), out / MANIFEST_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            number = path.name.split(".", 1)[0].removesuffix("_stats")
            if number.isdigit() and int(number) >= shards:
                path.unlink()


def _remove_unlisted(out: Path, classes: list[str]) -> None:
    """Image files in the class folders that the manifest does not list (a killed run's, or an
    earlier run's with other quotas) go: the folder holds exactly the dataset."""
    listed = set(pd.read_csv(out / MANIFEST, usecols=["path"], dtype=str, keep_default_na=False)["path"])
    for cls in classes:
        if (out / cls).is_dir():
            for path in walk(out / cls)[0]:
                if path.relative_to(out).as_posix() not in listed:
                    path.unlink()
