"""Where a shard task puts the images it fetched: the layout is only the writer.

Two writers with one interface (img2dataset's `writer.py` has one per output format):

    writer = WRITERS[layout](out, shard)
    writer.write(i, row, data, info)   # any thread, any order: the i-th URL of the shard is an image
    writer.close()                     # after the last write: the images are all in place
    writer.abort()                     # on failure: nothing half-written is left

`write` sets the manifest row's `path` (the folder-relative file, or `shards/<NNNNN>.tar#<member>`),
so every layout's rows are written the same way. Each writer also names the folder where the shard
task keeps its resume record (`<NNNNN>.parquet`, `<NNNNN>.stats.json`: pipeline.fetch.shards).
Formats on disk: pipeline.core.dataset.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path

from pipeline.core.dataset import SHARDS, member_path, shard_name
from pipeline.core.images import EXTENSIONS, ImageInfo
from pipeline.fetch.manifest import write_image

TAR_META = ("url", "class", "sha256", "width", "height", "format")  # the `<key>.json` of a sample


class FolderWriter:
    """`<class>/<sha256>.<ext>` files, each written (atomically) as it arrives; a file already there
    with the same content is kept. The resume records go to `.shards/`, out of the class tree."""

    records = ".shards"

    def __init__(self, out: Path, shard: int):
        self.out = out

    def write(self, i: int, row: dict, data: bytes, info: ImageInfo) -> None:
        row["path"] = write_image(self.out, row["class"], data, row["sha256"], info)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class TarWriter:
    """`shards/<NNNNN>.tar`, a webdataset tar: per image `<key>.<ext>` (the original bytes) and
    `<key>.json`, in candidate order, key `<NNNNN><IIIII>`, members with fixed times (same input, same
    bytes). Bodies go to a spill file as they arrive, in any order, and are copied into the tar in
    candidate order at `close`, so a slow URL never holds the others' bytes in memory."""

    records = SHARDS

    def __init__(self, out: Path, shard: int):
        self.folder = out / SHARDS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = shard_name(shard)
        self.tmp = self.folder / f".{self.name}.tar.tmp"
        self.spill_path = self.folder / f".{self.name}.spill.tmp"
        self.spill = open(self.spill_path, "w+b")  # noqa: SIM115 (closed in close/abort)
        self.lock = threading.Lock()
        self.samples: dict[int, tuple[str, int, int, bytes]] = {}  # i -> (member, offset, size, json)

    def write(self, i: int, row: dict, data: bytes, info: ImageInfo) -> None:
        member = f"{self.name}{i:05d}.{EXTENSIONS[info.format]}"
        meta = json.dumps({key: row[key] for key in TAR_META}).encode()
        with self.lock:
            offset = self.spill.seek(0, os.SEEK_END)
            self.spill.write(data)
            self.samples[i] = (member, offset, len(data), meta)
        row["path"] = member_path(self.name, member)

    def close(self) -> None:
        self.spill.flush()
        with tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in sorted(self.samples):
                member, offset, size, meta = self.samples[i]
                _add(tar, member, os.pread(self.spill.fileno(), size, offset))
                _add(tar, f"{member.rsplit('.', 1)[0]}.json", meta)
        os.replace(self.tmp, self.folder / f"{self.name}.tar")
        self.abort()

    def abort(self) -> None:
        self.spill.close()
        self.spill_path.unlink(missing_ok=True)
        self.tmp.unlink(missing_ok=True)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0  # no clock in the bytes: same input, same tar
    tar.addfile(info, io.BytesIO(data))


WRITERS: dict[str, type[FolderWriter] | type[TarWriter]] = {"folder": FolderWriter, "shards": TarWriter}
