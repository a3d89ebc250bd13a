"""Atomic file writing, used by every output writer.

Each file is written to a temporary sibling and renamed into place (`os.replace` is atomic on one
file system), so a crash, a kill or a full disk never leaves a half-written file at the real name,
where a reader or DVC would trust it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file open at a temporary sibling of `path`, renamed to `path` when the block ends
    without error; on any failure the temporary goes. For outputs streamed rather than held whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling; on any failure the temporary goes."""
    with atomic_file(path) as fh:
        fh.write(data)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    """Indented JSON with a final newline; NaN and infinities are refused (JSON has none)."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_records(path: Path, records: list[dict]) -> None:
    """DVC plot data: an array of records, one per line: small, readable and diff-friendly."""
    lines = ",\n".join(json.dumps(record, allow_nan=False) for record in records)
    write_text(path, f"[\n{lines}\n]\n" if records else "[]\n")
