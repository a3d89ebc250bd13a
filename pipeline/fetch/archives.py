"""Safe reading of zip and tar archives: one member at a time, checked before it is read.

Members are read into memory one by one (never the whole archive) and are never extracted by name:
callers decide where the bytes go, so a hostile name cannot write outside the output folder. Even
so, every member whose name or type could be used to escape a folder on extraction is refused, with
its reason, so a manifest shows it:

- names with a `..` component, absolute names (`/x`, `\\x`, `C:x`), empty names or NUL bytes;
- symlinks, hardlinks, devices, FIFOs and anything else that is not a regular file;
- encrypted zip members;
- members larger than `max_member_bytes` (from the header, then enforced while streaming).

The total uncompressed size of the members read is capped by `max_total_bytes`: a zip is checked
up front from its central directory, a (compressed, streamed) tar as it goes. Going over it is an
archive-level InputError (a decompression bomb or the wrong file), not a per-member refusal.

Python's zipfile never returns more bytes than a member's declared size (and then fails its CRC
check), and tarfile reads exactly the size in the member header, so the declared sizes are what the
caps see. We never call `extract`, so tarfile's `filter="data"` does not apply; the checks below
are stricter than it (no links at all, even inside the folder).
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import IO

from pipeline.core.errors import InputError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One archive member that is not a directory."""

    name: str  # as stored in the archive
    size: int  # uncompressed bytes, from the member header
    data: bytes | None  # the member's bytes; None when refused
    problem: str  # "" when `data` is set, else why the member was refused


def unsafe_name(name: str) -> str:
    """Why extracting a member called `name` could escape the output folder, or '' if it cannot."""
    if not name or "\x00" in name:
        return "unsafe name: empty or contains NUL"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return f"unsafe name: absolute path {name!r}"
    if ".." in name.replace("\\", "/").split("/"):
        return f"unsafe name: path traversal {name!r}"
    return ""


def _read_stream(stream: IO[bytes], limit: int) -> bytes:
    """All of `stream` in chunks; a ValueError past `limit` bytes, before buffering more."""
    parts, total = [], 0
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise ValueError(f"too large: over {limit} bytes when read")
        parts.append(chunk)
    return b"".join(parts)


def _too_large(size: int, limit: int) -> str:
    return f"too large: {size} bytes > max_member_bytes {limit}" if size > limit else ""


def _over_total(path: Path, total: int, limit: int) -> InputError:
    return InputError(
        f"{path}: archive expands to over {total} bytes, more than max_total_bytes {limit} "
        "(a decompression bomb or the wrong file? raise the cap if it is expected)"
    )


def _zip_problem(info: zipfile.ZipInfo, max_member_bytes: int) -> str:
    kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0  # Unix file type, if recorded
    if kind == stat.S_IFLNK:
        return "refused: symlink"
    if kind not in (0, stat.S_IFREG):
        return "refused: not a regular file (device, FIFO or socket)"
    if info.flag_bits & 0x1:
        return "refused: encrypted member"
    return unsafe_name(info.filename) or _too_large(info.file_size, max_member_bytes)


def iter_zip(path: Path, max_member_bytes: int, max_total_bytes: int) -> Iterator[Entry]:
    """Every non-directory member of the zip at `path`, in archive order, read or refused.

    Raises InputError for a missing file, a file that is not a zip, or a total over the cap.
    A member that fails while being read (bad CRC, corrupt deflate data) is an Entry with a problem.
    """
    if not path.is_file():
        raise InputError(f"archive not found: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a valid zip archive ({exc})") from None
    with zf:
        infos = [info for info in zf.infolist() if not info.is_dir()]
        problems = [_zip_problem(info, max_member_bytes) for info in infos]
        total = sum(info.file_size for info, problem in zip(infos, problems) if not problem)
        if total > max_total_bytes:
            raise _over_total(path, total, max_total_bytes)
        for info, problem in zip(infos, problems):
            if problem:
                yield Entry(info.filename, info.file_size, None, problem)
                continue
            try:
                with zf.open(info) as stream:
                    data = _read_stream(stream, max_member_bytes)
            except ValueError as exc:
                yield Entry(info.filename, info.file_size, None, str(exc))
                continue
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                yield Entry(info.filename, info.file_size, None, f"corrupt archive member: {str(exc)[:120]}")
                continue
            yield Entry(info.filename, info.file_size, data, "")


def _tar_problem(member: tarfile.TarInfo, max_member_bytes: int) -> str:
    if member.issym():
        return "refused: symlink"
    if member.islnk():
        return "refused: hardlink"
    if not member.isfile():
        return "refused: not a regular file (device, FIFO or socket)"
    return unsafe_name(member.name) or _too_large(member.size, max_member_bytes)


def iter_tar(path: Path, max_member_bytes: int, max_total_bytes: int) -> Iterator[Entry]:
    """Every non-directory member of the (optionally compressed) tar at `path`, read or refused.

    The archive is streamed once from start to end (mode `r|*`), so a .tar.gz is never seeked back
    and re-decompressed. Raises InputError for a missing or unreadable archive or a total over the cap.
    """
    if not path.is_file():
        raise InputError(f"archive not found: {path}")
    total = 0
    try:
        with tarfile.open(path, "r|*") as tf:
            for member in tf:
                tf.members.clear()  # (tarfile keeps every member read otherwise: millions for a shard set)
                if member.isdir():
                    continue
                problem = _tar_problem(member, max_member_bytes)
                if problem:
                    yield Entry(member.name, member.size, None, problem)
                    continue
                total += member.size
                if total > max_total_bytes:
                    raise _over_total(path, total, max_total_bytes)
                stream = tf.extractfile(member)
                yield Entry(member.name, member.size, _read_stream(stream, max_member_bytes), "")
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a valid or complete tar archive ({str(exc)[:120]})") from None
