"""Files in and out, safely: used by every reader of user files and every output writer.

- Out: each file is written to a temporary sibling and renamed into place (`os.replace` is atomic
  on one file system), so a crash, a kill or a full disk never leaves a half-written file at the
  real name, where a reader or DVC would trust it; a whole output folder is built beside its place
  and swapped in (`staged_dir`); one writer per output (`exclusive`).
- In: regular files only, symbolic links never followed, reads capped (`walk`, `read_capped`);
  names that are not UTF-8 are recorded escaped (`printable`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file open at a temporary sibling of `path`, renamed to `path` when the block ends
    without error; on any failure the temporary goes. For outputs streamed rather than held whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk says nothing of which file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
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


def human_size(n: int) -> str:
    """A size in bytes as people read it: 512 bytes, 12.3 KB, 4.5 MB, 1.2 GB (powers of 1000)."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def printable(name: str) -> str:
    """A file name as text that any CSV or terminal takes: bytes that are not UTF-8 (kept by Python
    as surrogates) become backslash escapes, so `caf\\xe9.jpg` is recorded, not a crash."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def walk(root: Path, hidden_files: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The regular files under `root` (sorted; hidden folders, and hidden files unless
    `hidden_files`, left out), and every other entry with the reason it is not read: symbolic links
    are never followed (so nothing outside `root` is read), FIFOs, sockets and devices would block
    or never end."""
    files: list[Path] = []
    others: list[tuple[Path, str]] = []
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith(".") and not (hidden_files and entry.is_file(follow_symlinks=False)):
                    continue
                path = Path(entry.path)
                if entry.is_symlink():
                    others.append((path, "symbolic link, not followed"))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    files.append(path)
                else:
                    others.append((path, "not a regular file (FIFO, socket or device)"))
    return sorted(files), sorted(others)


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them; ImageError says why
    not (a symbolic link is not followed; a FIFO or device is refused before it can block, an
    endless file is cut off at the cap)."""
    from pipeline.core.errors import ImageError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        reason = {
            errno.ELOOP: "symbolic link, not followed",
            errno.ENOENT: "file not found",
            errno.EISDIR: "is a folder, not an image file",
        }
        raise ImageError(reason.get(exc.errno, f"cannot read: {exc.strerror or exc}")) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError("is a folder, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file (FIFO, socket or device)")
        if info.st_size > max_bytes:
            raise ImageError(f"too large: {info.st_size} bytes > {max_bytes}")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while being read
        raise ImageError(f"too large: over {max_bytes} bytes")
    return data


@contextmanager
def exclusive(out: Path, command: str) -> Iterator[None]:
    """One writer per output: hold `.<name>.lock` beside `out` while writing it. A second run fails
    at once with one line instead of mixing its files with the first one's."""
    from filelock import FileLock, Timeout

    from pipeline.core.errors import InputError

    out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out.parent / f".{out.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(
            f"{out} is being written by another `pipeline {command}`; wait for it to finish (lock: {lock.lock_file})"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A new temporary folder beside `out` to write a whole output into: on success it replaces
    `out` (the old one is moved aside, the new one renamed in, the old one deleted), on failure it
    is deleted. Leftovers of a killed run are deleted first: call it while holding `exclusive`."""
    for stale in [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_records(path: Path, records: list[dict]) -> None:
    """DVC plot data: an array of records, one per line: small, readable and diff-friendly."""
    lines = ",\n".join(json.dumps(record, allow_nan=False) for record in records)
    write_text(path, f"[\n{lines}\n]\n" if records else "[]\n")
