"""Progress display: a rich progress bar on a terminal, silence otherwise (logs, CI, DVC stages)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

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
        try:
            yield lambda n=1: shown.advance(task, n)
        finally:
            _shown.pop()


def advance(n: int = 1) -> bool:
    """Advance the bar this process shows by `n`, from any thread; False when it shows none (a
    worker process, no terminal), so the caller knows its parent must count the work instead."""
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
