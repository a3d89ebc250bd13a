"""Progress display: a rich progress bar on a terminal, silence otherwise (logs, CI, DVC stages)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
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


def progress(
    items: Iterable[T], description: str, total: int | None = None, size: Callable[[T], int] | None = None
) -> Iterator[T]:
    """`items`, with a progress bar on a terminal: done of `total`, percentage, rate and time left.
    With `size` (bytes per item, e.g. `len` of downloaded chunks) `total` is in bytes and the count
    and rate are shown as sizes (MB, MB/s)."""
    if not console.is_terminal:
        return iter(items)
    count = (DownloadColumn(), TransferSpeedColumn()) if size else (MofNCompleteColumn(), RateColumn())
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        *count,
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    return _tracked(bar, items, description, total, size)


def _tracked(
    bar: Progress, items: Iterable[T], description: str, total: int | None, size: Callable[[T], int] | None
) -> Iterator[T]:
    with bar:
        task = bar.add_task(
            description, total=total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        )
        for item in items:
            yield item
            bar.advance(task, size(item) if size else 1)
