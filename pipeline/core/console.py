"""Progress display: a rich progress bar on a terminal, silence otherwise (logs, CI, DVC stages)."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import track

T = TypeVar("T")

console = Console(stderr=True)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    return iter(track(items, description=description, total=total, console=console, disable=not console.is_terminal, transient=True))
