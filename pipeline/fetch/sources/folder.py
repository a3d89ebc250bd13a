"""Any local directory of class subfolders (`--path DIR`): `DIR/<class>/**/<file>`.

Every regular file under a class subfolder (at any depth; symbolic links are never followed) is
validated like a downloaded image and, when valid, copied into `<out>/<class>/<sha256>.<ext>`;
nothing under `path` is ever moved, modified or deleted. The rest get a manifest row with their
reason (`origin` = the file's path relative to `path`): system files such as Thumbs.db, files
that are not images, broken ones, files directly in `path` (no class), files over `max_file_bytes`.
Hidden subfolders (`.git`, ...) are not read. Classes are the non-hidden subfolders in
alphabetical order (label i = i-th), as Keras's `image_dataset_from_directory` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import ConfigError, ImageError, InputError
from pipeline.core.files import read_capped, walk
from pipeline.fetch.manifest import FetchResult, write_manifest
from pipeline.fetch.params import FetchParams
from pipeline.fetch.sources import FolderParams
from pipeline.fetch.sources.common import Candidate, store_images, system_file


def candidates(root: Path, classes: list[str], max_file_bytes: int) -> Iterator[Candidate]:
    files, others = walk(root, hidden_files=True)  # (.DS_Store and the like get a row)
    for path, reason in others:
        rel = path.relative_to(root).as_posix()
        yield Candidate(rel, rel.split("/", 1)[0] if "/" in rel else "", None, "skipped", reason)
    for file in files:
        rel = file.relative_to(root).as_posix()
        cls = rel.split("/", 1)[0] if "/" in rel else ""
        if cls not in classes:
            yield Candidate(rel, "", None, "skipped", "not in a class subfolder")
        elif system_file(rel):
            yield Candidate(rel, cls, None, "skipped", f"system file, not an image: {file.name}")
        else:
            try:
                yield Candidate(rel, cls, read_capped(file, max_file_bytes))
            except ImageError as exc:
                yield Candidate(
                    rel,
                    cls,
                    None,
                    "skipped",
                    str(exc).replace(f"> {max_file_bytes}", f"> max_file_bytes {max_file_bytes}"),
                )


def check(out: Path, params: FolderParams) -> None:
    """Before anything is written: the folder exists and does not overlap the output."""
    if not params.path:
        raise ConfigError("fetch.folder.path is not set: give --path DIR (a directory of class subfolders)")
    root = Path(params.path)
    if not root.is_dir():
        raise InputError(f"folder not found: {root}")
    src, dst = root.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ConfigError(f"--out {out} and --path {root} overlap: the copy would read its own output")


def fetch(out: Path, params: FolderParams, cfg: FetchParams) -> FetchResult:
    """Copy every valid image under `params.path`'s class subfolders into `<out>/<class>/`."""
    check(out, params)
    root = Path(params.path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.is_symlink() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"no class subfolders in {root}: expected {root}/<class>/<image files>")
    out.mkdir(parents=True, exist_ok=True)
    rows = store_images(out, candidates(root, classes, params.max_file_bytes), classes, cfg.download, f"Reading {root}")
    return write_manifest(out, rows, classes, "folder")
