"""The audit's contact sheets, written to `plots/audit/` by `pipeline audit` and embedded in the summary page:
  duplicates.png     one row per duplicate group (numbered as in the summary's table), one thumbnail per
                     member with its caption, the first MAX_MEMBERS members and then a "+N more" cell
  label_issues.png   the label-issue candidates, COLUMNS to a row, each with its caption

An empty list still gives a small PNG that says so. Drawn with matplotlib's object API (no display, no
global pyplot state to close) and saved without a version stamp, so the bytes are the same for the same input.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from pipeline.core.files import write_atomic

DUPLICATES = "duplicates.png"
LABEL_ISSUES = "label_issues.png"
NO_GROUPS = "No duplicate groups found"
NO_ISSUES = "No label issues found"
MAX_GROUPS = 12  # rows drawn; the title says how many there were
MAX_MEMBERS = 8  # thumbnails per group row, then a "+N more" cell
MAX_ISSUES = 24
COLUMNS = 4  # label-issue thumbnails per row
CELL = 1.7  # inches per thumbnail cell (width; the height adds room for the caption)
CAPTION_CHARS = 28


def _save(fig, path: Path) -> None:
    png = io.BytesIO()
    fig.savefig(png, format="png", metadata={"Software": None})  # no version stamp: same bytes every run
    write_atomic(path, png.getvalue())


def _message(path: Path, title: str, text: str) -> None:
    """A small PNG with the title and one line of text (an empty sheet)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 1.2), dpi=100)
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.4, text, ha="center", va="center", fontsize=12)
    _save(fig, path)


def _grid(title: str, rows: int, columns: int):
    """A figure of rows x columns cells, every cell blank until drawn."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(columns * CELL, rows * (CELL + 0.4) + 0.5), dpi=100, layout="constrained")
    fig.suptitle(title, fontsize=11)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig, axes


def _thumbnail(ax, image: np.ndarray, caption: str) -> None:
    """The image (RGB, or one channel drawn gray) with its caption, wrapped, underneath."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if image.ndim == 2 or image.shape[-1] == 1:
        ax.imshow(image.reshape(image.shape[:2]), cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
    else:
        ax.imshow(image, interpolation="antialiased")
    lines = [textwrap.fill(line, CAPTION_CHARS) for line in caption.splitlines()]
    ax.set_xlabel("\n".join(lines), fontsize=7)


def _more(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, transform=ax.transAxes)


def write_groups_png(groups: list[list[tuple[np.ndarray, str]]], path: Path, title: str) -> None:
    """One row per duplicate group (the first MAX_GROUPS), one (thumbnail, caption) cell per member."""
    if not groups:
        _message(path, title, NO_GROUPS)
        return
    shown = groups[:MAX_GROUPS]
    longest = max(len(group) for group in shown)
    columns = max(1, min(longest, MAX_MEMBERS)) + (longest > MAX_MEMBERS)
    heading = title if len(groups) == len(shown) else f"{title} (first {len(shown)} of {len(groups)} groups)"
    fig, axes = _grid(heading, len(shown), columns)
    for number, (row, group) in enumerate(zip(axes, shown), 1):
        row[0].set_title(f"#{number}", loc="left", fontsize=9)
        for ax, (image, caption) in zip(row, group[:MAX_MEMBERS]):
            _thumbnail(ax, image, caption)
        if len(group) > MAX_MEMBERS:
            _more(row[MAX_MEMBERS], f"+{len(group) - MAX_MEMBERS} more")
    _save(fig, path)


def write_issues_png(items: list[tuple[np.ndarray, str]], path: Path, title: str, empty: str = NO_ISSUES) -> None:
    """The (thumbnail, caption) label-issue candidates, COLUMNS to a row, the first MAX_ISSUES;
    `empty` is the text when there are none (e.g. to say they were not computed)."""
    if not items:
        _message(path, title, empty)
        return
    shown = items[:MAX_ISSUES]
    heading = title if len(items) == len(shown) else f"{title} (first {len(shown)} of {len(items)})"
    columns = min(len(shown), COLUMNS)
    fig, axes = _grid(heading, -(-len(shown) // columns), columns)
    for ax, (image, caption) in zip(axes.ravel(), shown):
        _thumbnail(ax, image, caption)
    _save(fig, path)
