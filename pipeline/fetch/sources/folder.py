"""Any local directory of class subfolders (`--path DIR`): `DIR/<class>/**/<file>`.

Every regular file under a class subfolder (at any depth; symbolic links are never followed) is
validated like a downloaded image and, when valid, copied into `<out>/<class>/<sha256>.<ext>`;
nothing under `path` is ever moved, modified or deleted. The rest get a manifest row with their
reason (`origin` = the file's path relative to `path`): system files such as Thumbs.db, files
that are not images, broken ones, files directly in `path` (no class), files over `max_file_bytes`.
Hidden subfolders (`.git`, ...) are not read. Classes are the non-hidden subfolders in
alphabetical order (label i = i-th), as Keras's `image_dataset_from_directory` does.

A folder that is not a class tree but webdataset or img2dataset output (mostly tars and sidecar
files, or subfolders numbered like shards: 00000, 00001, ...) is refused before anything is
written, with one line naming what it looks like and the source that reads it (`webdataset`).
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
from pipeline.fetch.sources.webdataset import TAR_SUFFIXES

SHARD_SIDECARS = {".json", ".txt", ".parquet"}  # beside the images (or tars) of img2dataset's output


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


def looks_like_shards(root: Path, files: list[Path], classes: list[str]) -> str:
    """What `root` looks like, and what to do, when it is webdataset or img2dataset output rather
    than a tree of class subfolders; '' when it is not: most of its files tars or sidecars (.json,
    .txt, .parquet; img2dataset writes three files a sample: image, caption, metadata), or its
    subfolders named like shard numbers (00000, 00001, ...: digits only, all of one width of at
    least 5, as img2dataset and the shard layout number them; MNIST's 0..9 stay classes)."""
    tars = [f for f in files if f.name.lower().endswith(TAR_SUFFIXES)]
    sidecars = [f for f in files if f.suffix.lower() in SHARD_SIDECARS]
    if files and 2 * (len(tars) + len(sidecars)) > len(files):
        kinds = sorted({".tar" for _ in tars[:1]} | {f.suffix.lower() for f in sidecars})
        what = f"{len(tars) + len(sidecars)} of its {len(files)} files are tars or sidecars ({', '.join(kinds)})"
        if tars:
            return f"{what}, as in webdataset or img2dataset output: import the tars with --source webdataset"
        return (
            f"{what}, as in img2dataset's --output_format files: run img2dataset with --output_format "
            "webdataset and import its tars with --source webdataset"
        )
    if classes and all(c.isascii() and c.isdigit() and len(c) == len(classes[0]) >= 5 for c in classes):
        shown = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
        return (
            f"its subfolders {shown} are numbered like shards (img2dataset's output), not named like classes: "
            "import tars with --source webdataset (or rename the subfolders if they are classes)"
        )
    return ""


def check(out: Path, params: FolderParams) -> None:
    """Before anything is written: the folder exists, does not overlap the output and looks like a
    tree of class subfolders (not shards: those are --source webdataset's)."""
    if not params.path:
        raise ConfigError("fetch.folder.path is not set: give --path DIR (a directory of class subfolders)")
    root = Path(params.path)
    if not root.is_dir():
        raise InputError(f"folder not found: {root}")
    src, dst = root.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ConfigError(f"--out {out} and --path {root} overlap: the copy would read its own output")
    looks = looks_like_shards(root, walk(root)[0], class_folders(root))
    if looks:
        raise InputError(f"{root} does not look like a folder of class subfolders: {looks}")


def class_folders(root: Path) -> list[str]:
    """The class subfolders: non-hidden folders (not symbolic links), alphabetical."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.is_symlink() and not d.name.startswith("."))


def fetch(out: Path, params: FolderParams, cfg: FetchParams) -> FetchResult:
    """Copy every valid image under `params.path`'s class subfolders into `<out>/<class>/`."""
    check(out, params)
    root = Path(params.path)
    classes = class_folders(root)
    if not classes:
        raise InputError(f"no class subfolders in {root}: expected {root}/<class>/<image files>")
    out.mkdir(parents=True, exist_ok=True)
    rows = store_images(out, candidates(root, classes, params.max_file_bytes), classes, cfg.download, f"Reading {root}")
    return write_manifest(out, rows, classes, "folder")
