"""Progress display: a rich progress bar on a terminal, silence otherwise (logs, CI, DVC stages)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

T = TypeVar("T")

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column counts bytes)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("-/s", style="progress.data.speed")
        return Text(f"{speed:,.1f}/s" if speed < 10 else f"{speed:,.0f}/s", style="progress.data.speed")


def shows_progress() -> bool:
    """Bars on a terminal, drawn by the process that owns it: worker processes (a local pool's, a
    Dask cluster's) report to their parent instead, and a bar never opens inside another."""
    return console.is_terminal and multiprocessing.parent_process() is None and not _shown


_shown: list[tuple[Progress, TaskID]] = []  # the bar this process shows now, if any
_from_workers: Any = None  # the counter this process's pool workers advance (shared_counter)
_to_parent: Any = None  # in a pool worker: the counter of the process that started the pool
POLL = 0.25  # seconds between looks at the workers' counter while a bar is shown


def shared_counter(context: Any) -> Any:
    """The counter (a multiprocessing Value, made once per process) that the workers of a local
    pool started with `report_to(counter)` advance, so the bar moves item by item, not only when a
    worker's task returns (a shard of 10,000 URLs, a group of 4,096 images)."""
    global _from_workers
    if _from_workers is None:
        _from_workers = context.Value("q", 0)
    return _from_workers


def report_to(counter: Any) -> None:
    """In a pool worker (its initializer): `advance` adds to the parent's counter."""
    global _to_parent
    _to_parent = counter


@contextmanager
def bar(description: str, total: int | None, size: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar for the block (when `shows_progress()`): yields `advance(n)`, which any thread
    may call; `advance()` below reaches the same bar from code that was not handed it. With `size`,
    `total` and the advances are bytes (shown as MB and MB/s)."""
    if not shows_progress():
        yield lambda n=1: None
        return
    count = (DownloadColumn(), TransferSpeedColumn()) if size else (MofNCompleteColumn(), RateColumn())
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, *count, TimeRemainingColumn(), console=console, transient=True) as shown:
        task = shown.add_task(description, total=total)
        _shown.append((shown, task))
        done = threading.Event()
        poller = threading.Thread(target=_poll, args=(shown, task, done), daemon=True, name="bar-poll")
        poller.start()
        try:
            yield lambda n=1: shown.advance(task, n)
        finally:
            done.set()
            poller.join()
            _shown.pop()


def _poll(shown: Progress, task: TaskID, done: threading.Event) -> None:
    """Move the bar by what pool workers counted (`shared_counter`) since it opened, to the end."""
    seen = _from_workers.value if _from_workers is not None else 0
    while True:
        last = done.wait(POLL)
        if _from_workers is not None:
            now = _from_workers.value
            shown.advance(task, now - seen)
            seen = now
        if last:
            return


def advance(n: int = 1) -> bool:
    """Advance the bar this process shows by `n`, from any thread, or in a pool worker its parent's
    (`report_to`); False when neither (a Dask worker, no terminal), so the caller knows its parent
    must count the work when the task returns."""
    if _to_parent is not None:
        with _to_parent.get_lock():
            _to_parent.value += n
        return True
    if not _shown:
        return False
    shown, task = _shown[-1]
    shown.advance(task, n)
    return True


def progress(
    items: Iterable[T], description: str, total: int | None = None, size: Callable[[T], int] | None = None
) -> Iterator[T]:
    """`items`, with a progress bar on a terminal: done of `total`, percentage, rate and time left.
    With `size` (bytes per item, e.g. `len` of downloaded chunks) `total` is in bytes and the count
    and rate are shown as sizes (MB, MB/s)."""
    if not shows_progress():
        return iter(items)
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    return _tracked(items, description, total, size)


def _tracked(items: Iterable[T], description: str, total: int | None, size: Callable[[T], int] | None) -> Iterator[T]:
    with bar(description, total, size is not None) as step:
        for item in items:
            yield item
            step(size(item) if size else 1)
