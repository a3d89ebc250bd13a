"""Where a shard task puts the images it fetched: the layout is only the writer.

Two writers with one interface (img2dataset's `writer.py` has one per output format):

    writer = WRITERS[layout](out, shard, labels)   # labels: class -> index (dataset.json's order)
    writer.write(i, row, data, info)   # any thread, any order: the i-th URL of the shard is an image
    facts = writer.close()             # after the last write: the images are all in place
    writer.abort()                     # on failure: nothing half-written is left
    WRITERS[layout].damage(out, shard, rows, stats, deep)   # a finished shard's images, checked
    TarWriter.settle(out, shard, frame, labels)             # the settled split and duplicates, in the tar

`write` sets the manifest row's `path` (the folder-relative file, or `shards/<NNNNN>.tar#<member>`),
so every layout's rows are written the same way; `close` returns what the shard's stats record of
the stored images (the tar's size and members), which `damage` checks on a rerun, and with `deep`
every image's SHA-256 against its row. The tar writer's `settle`, once duplicates and the split are
decided, records them in each sample's `<key>.json` (folders keep no metadata beside the manifest). Each
writer also names the folder where the shard task keeps its resume record (`<NNNNN>.parquet`,
`<NNNNN>_stats.json`: pipeline.fetch.shards). Formats on disk: pipeline.core.dataset. A
file-system error names the file it was writing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.checkpoint import checkpoint
from pipeline.core.dataset import SHARDS, member_path, shard_name, split_member
from pipeline.core.images import EXTENSIONS, ImageInfo
from pipeline.fetch.manifest import write_image

TAR_FORMAT = 2  # 2: a sample is <key>.<ext>, <key>.cls, <key>.json (1, before: no cls; a rerun refetches those)
JSON_SPARE = 96  # bytes of room a sample's JSON keeps for what settling adds (split, status, duplicate_of)


class FolderWriter:
    """`<class>/<sha256>.<ext>` files, each written (atomically) as it arrives; a file already there
    with the same content is kept. The resume records go to `.shards/`, out of the class tree."""

    records = ".shards"

    def __init__(self, out: Path, shard: int, labels: dict[str, int]):
        self.out = out

    def write(self, i: int, row: dict, data: bytes, info: ImageInfo) -> None:
        row["path"] = write_image(self.out, row["class"], data, row["sha256"], info)

    def close(self) -> dict:
        return {}

    def abort(self) -> None:
        pass

    @staticmethod
    def damage(out: Path, shard: int, rows: pa.Table, stats: dict, deep: bool) -> str:
        """Why the stored images of a finished shard cannot be trusted, "" when they can: a file
        missing or of another size than its row says (with `deep`, another SHA-256)."""
        for path, size, digest in _stored(rows):
            try:
                actual = (out / path).stat().st_size
            except OSError:
                return f"{path} is missing"
            if actual != size:
                return f"{path} holds {actual} bytes, not {size}"
            if deep and _sha256((out / path).read_bytes()) != digest:
                return f"{path} is not the image fetched (another SHA-256)"
        return ""


class TarWriter:
    """`shards/<NNNNN>.tar`, a standard webdataset tar: per image `<key>.<ext>` (the original bytes),
    `<key>.cls` (the class index, decimal) and `<key>.json` (`sample_meta`), in candidate order, key
    `<NNNNN><IIIII>`, members with fixed times (same input, same bytes). Bodies go to a spill file as
    they arrive, in any order, and are copied into the tar in candidate order at `close`, so a slow
    URL never holds the others' bytes in memory.

    The JSON is padded with spaces (valid JSON) to a whole 512-byte tar block with JSON_SPARE bytes
    free, so `settle` rewrites it in place, same size: the tar keeps its size and members (what the
    shard's stats record), and settling a million-image dataset writes kilobytes, not the images."""

    records = SHARDS

    def __init__(self, out: Path, shard: int, labels: dict[str, int]):
        self.labels = labels
        self.folder = out / SHARDS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = shard_name(shard)
        self.tmp = self.folder / f".{self.name}.tar.tmp"
        self.spill_path = self.folder / f".{self.name}.spill.tmp"
        self.spill = open(self.spill_path, "w+b")  # (closed in close or abort)
        self.lock = threading.Lock()
        self.samples: dict[int, tuple[str, int, int, int, bytes]] = {}  # i -> (member, offset, size, cls, json)

    def write(self, i: int, row: dict, data: bytes, info: ImageInfo) -> None:
        member = f"{row['key']}.{EXTENSIONS[info.format]}"
        label = self.labels[row["class"]]
        meta = _padded(sample_meta(row["key"], row, label))
        with self.lock, _naming(self.spill_path):
            offset = self.spill.seek(0, os.SEEK_END)
            self.spill.write(data)
            self.samples[i] = (member, offset, len(data), label, meta)
        row["path"] = member_path(self.name, member)

    def close(self) -> dict:
        with _naming(self.tmp):
            self.spill.flush()
            with tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for i in sorted(self.samples):
                    member, offset, size, label, meta = self.samples[i]
                    key = member.rsplit(".", 1)[0]
                    _add(tar, member, os.pread(self.spill.fileno(), size, offset))
                    _add(tar, f"{key}.cls", str(label).encode())
                    _add(tar, f"{key}.json", meta)
                    checkpoint("fetch.tar")
            final = self.folder / f"{self.name}.tar"
            os.replace(self.tmp, final)
        self.abort()
        return {"tar_bytes": final.stat().st_size, "members": 3 * len(self.samples), "tar_format": TAR_FORMAT}

    def abort(self) -> None:
        self.spill.close()
        self.spill_path.unlink(missing_ok=True)
        self.tmp.unlink(missing_ok=True)

    @staticmethod
    def damage(out: Path, shard: int, rows: pa.Table, stats: dict, deep: bool) -> str:
        """Why the tar of a finished shard cannot be trusted, "" when it can: missing, another size
        or another number of members than its stats say (read from the headers alone); with `deep`,
        an image whose SHA-256 is not its row's."""
        path = out / SHARDS / f"{shard_name(shard)}.tar"
        if stats.get("tar_format") != TAR_FORMAT:
            return f"{path.name} has an older format (no <key>.cls)"
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path.name} is missing"
        if size != stats.get("tar_bytes", size):
            return f"{path.name} holds {size} bytes, not {stats['tar_bytes']}"
        digests = {split_member(row_path)[1]: digest for row_path, _, digest in _stored(rows)}
        members = 0
        try:
            with tarfile.open(path, "r:") as tar:
                for info in iter(tar.next, None):
                    tar.members.clear()  # (tarfile keeps every member read otherwise)
                    members += 1
                    if deep and info.name in digests and _sha256(tar.extractfile(info).read()) != digests[info.name]:
                        return f"{path.name}#{info.name} is not the image fetched (another SHA-256)"
        except (tarfile.TarError, OSError) as exc:
            return f"{path.name} cannot be read ({str(exc)[:80]})"
        if members != stats.get("members", members):
            return f"{path.name} holds {members} members, not {stats['members']}"
        return ""

    @staticmethod
    def settle(out: Path, shard: int, frame: pd.DataFrame, labels: dict[str, int]) -> None:
        """Write each sample's settled JSON (split; status, and `duplicate_of` for a duplicate) over
        its fetched one, same size, where it differs. In place when the tar is this folder's own
        file; a tar with other links (a DVC cache's hard link) or read-only is copied first and the
        copy renamed over it, so nothing outside the dataset folder ever changes."""
        path = out / SHARDS / f"{shard_name(shard)}.tar"
        rows = frame.to_dict("records")  # (once: a row lookup per sample in the frame costs 100x more)
        changes = []
        with open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            for info in iter(tar.next, None):
                tar.members.clear()
                if not info.name.endswith(".json"):
                    continue
                key = info.name[: -len(".json")]
                row = rows[int(key[len(shard_name(shard)) :])]
                meta = sample_meta(key, row, labels[row["class"]])
                if row["status"] == "duplicate":
                    meta["duplicate_of"] = split_member(row["path"])[1].rsplit(".", 1)[0]
                new = _padded(meta, info.size)
                if os.pread(fh.fileno(), info.size, info.offset_data) != new:
                    changes.append((info.offset_data, new))
        if not changes:
            return
        target = path
        if path.stat().st_nlink > 1 or not os.access(path, os.W_OK):
            target = path.with_name(f".{path.name}.settle.tmp")
            shutil.copyfile(path, target)
        with _naming(target):
            fd = os.open(target, os.O_WRONLY)
            try:
                for offset, new in changes:
                    os.pwrite(fd, new, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            if target != path:
                os.replace(target, path)


def sample_meta(key: str, row: dict, label: int) -> dict:
    """A sample's `<key>.json`: where it came from, what it is, and (once settled) its split."""
    meta = {"key": key, "url": row["url"], "class": row["class"], "cls": label, "split": row.get("split") or ""}
    meta.update(status=row["status"], sha256=row["sha256"])
    meta.update({name: int(row[name]) for name in ("width", "height")}, format=row["format"])
    return meta


def _padded(meta: dict, size: int = 0) -> bytes:
    """`meta` as JSON padded with spaces to `size` bytes, or (size 0) to whole 512-byte blocks with
    JSON_SPARE bytes to spare."""
    data = json.dumps(meta, sort_keys=True).encode()
    size = size or -(-(len(data) + JSON_SPARE) // 512) * 512
    if len(data) > size:  # (never: every field settling adds fits in JSON_SPARE)
        raise ValueError(f"the JSON of sample {meta['key']} outgrew its {size} bytes")
    return data.ljust(size)


def _stored(rows: pa.Table) -> list[tuple[str, int, str]]:
    """(path, bytes, sha256) of the rows whose image a shard stored."""
    ok = rows.filter(pc.equal(rows.column("status"), "success"))
    return list(zip(ok.column("path").to_pylist(), ok.column("bytes").to_pylist(), ok.column("sha256").to_pylist()))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise a file-system error that names no file (a full disk) naming `path`."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0  # no clock in the bytes: same input, same tar
    tar.addfile(info, io.BytesIO(data))


WRITERS: dict[str, type[FolderWriter] | type[TarWriter]] = {"folder": FolderWriter, "shards": TarWriter}
