"""Existing webdataset shards, e.g. img2dataset's output (`--path TARS`), imported as a fetched dataset.

`fetch.webdataset.path` names the tars: one file (`.tar`, `.tar.gz`, `.tgz`), a folder of them
(its direct children, sorted), a glob (`shards/*.tar`), a brace pattern (`shards/{00000..00099}.tar`,
expanded by the `braceexpand` package as webdataset does; each part may be a glob or a folder), or
http(s) URLs of tars (braces too). A URL is a source the user configured, so it is trusted (not
guarded like a URL list's), and is downloaded through the project's one HTTP client
(pipeline.fetch.http: resumable, `fetch.download.max_archive_bytes`) into the download cache,
`<out>/../downloads/webdataset/` unless `download_dir` says otherwise, kept between runs like the
archive sources' downloads (delete a file there to fetch it again). `pipe:` URLs are never run.

Samples follow the webdataset convention: members `<key>.<ext>`, where the key is the member's
path up to the first dot of its base name and the extension the rest (lower-cased); consecutive
members with the same key are one sample (a repeated extension starts a new one). The image is the
sample's first member with an image extension (IMAGE_EXTENSIONS); its bytes are kept unchanged,
validated and stored by content hash as every source does (pipeline.fetch.sources.common:
`<class>/<sha256>.<ext>`, the same bytes stored once, later copies `duplicate`). The class comes
from `label`:

- `cls`: `<key>.cls`, an integer class index as text. A `dataset.json` beside the tars (or one
  folder up, where this project's shard layout writes it) with a "classes" list names the indices; without one, the
  class is the index itself ("0", "1", ...).
- `txt`: `<key>.txt`, the text stripped: a caption that is the class name (img2dataset's
  `--caption_col`).
- `json:<field>`: the field of `<key>.json` (a string, or an integer).

A label must be usable as a folder name (no `/`, `\\`, control characters or leading dot, not `..`,
not one of the dataset's own file names, at most 255 bytes); otherwise the sample is skipped with
the reason. Classes are the labels of the stored images, sorted (by index for `cls`).

img2dataset writes `<NNNNN>.parquet` beside each `<NNNNN>.tar`, one row per URL of the shard
(key, url, status success / failed_to_download / failed_to_resize, error_message, caption, ...).
Where it is present, its failed rows become manifest rows with its status (failed_to_download,
failed_to_resize) and error_message, and each stored image gets its row's url (without one, the url of the
sample's `.json`, if any). A parquet without img2dataset's columns is ignored, with a warning.

Manifest (`origin` = `<tar>#<key>`): one row per sample, and per member that belongs to no sample
(a name without `<key>.<ext>`); `failed` for what cannot be read (a refused member: symlinks, hard
links, devices, names with `..` or absolute names, members over `max_member_bytes`, via
pipeline.fetch.archives; nothing is ever written under a member's name), `skipped` for samples
without an image or a usable label and for images that fail validation.

Caps: `max_member_bytes` per member and per sidecar file (parquet, read after checking its
uncompressed size; dataset.json); `max_total_bytes` and `max_members` for all the tars together,
past which the fetch stops with one line naming the tar. A tar that is truncated or not a tar at
all stops the fetch too, with one line naming it: a dataset imported from part of its shards
would be silently smaller and differently balanced than the one the user named, while the fix,
repairing the file or leaving it out of the pattern, is one edit. Nothing of a failed fetch is
trusted: `<out>/.incomplete` stays (pipeline.fetch.stage).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.core.dataset import SIDECARS
from pipeline.core.errors import ConfigError, ImageError, InputError
from pipeline.core.files import read_capped
from pipeline.fetch.archives import Entry, iter_tar
from pipeline.fetch.http import Client, DownloadError
from pipeline.fetch.manifest import FetchResult, write_manifest
from pipeline.fetch.params import FetchParams
from pipeline.fetch.sources import WebdatasetParams
from pipeline.fetch.sources.common import Candidate, download_cache, store_images

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext: (key, extension)
PARQUET_COLUMNS = ("key", "status")  # what makes a parquet img2dataset's
IMG2DATASET_FAILURES = ("failed_to_download", "failed_to_resize")  # its statuses, kept as they are
NOT_SAMPLE = "not a sample member: the name is not <key>.<ext>"
NO_IMAGE = f"no image: the sample has no {', '.join(IMAGE_EXTENSIONS)} member"
WHAT = "a .tar file, a folder of them, a glob or brace pattern (shards/{00000..00009}.tar) or http(s) URLs of tars"


# --- Where the tars are -------------------------------------------------------------------------


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def expand_braces(pattern: str) -> list[str]:
    """`a{0..2}b` -> a0b, a1b, a2b (bash's rules, zero padding kept), as webdataset expands shard lists."""
    if "{" not in pattern:
        return [pattern]
    from braceexpand import braceexpand

    try:
        return list(braceexpand(pattern))
    except Exception as exc:  # an unbalanced brace and the like
        raise ConfigError(f"fetch.webdataset.path {pattern!r}: not a brace pattern ({exc})") from None


def is_tar(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES) and not path.name.startswith(".")


def local_tars(part: str) -> list[str]:
    """The tar files one expanded part of the path names: a file, a folder's tars, or a glob's."""
    path = Path(part).expanduser()
    if any(c in part for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        tars = [str(p) for p in matches if p.is_file() and is_tar(p)]
        if not tars:
            raise InputError(f"fetch.webdataset.path: no tar files match {part} (give {WHAT})")
        return tars
    if path.is_dir():
        tars = sorted(str(p) for p in path.iterdir() if p.is_file() and is_tar(p))
        if not tars:
            raise InputError(f"no tar files in {path}: expected {path}/<name>.tar (webdataset shards)")
        return tars
    if not path.exists():
        raise InputError(f"shard not found: {path}")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (a tar was expected)")
    return [str(path)]


def sources(params: WebdatasetParams) -> list[str]:
    """Every tar to import, in order (each once): local paths and http(s) URLs."""
    text = params.path.strip()
    if not text:
        raise ConfigError(f"fetch.webdataset.path is not set: give --path TARS ({WHAT})")
    if text.lower().startswith("pipe:"):
        raise ConfigError(f"fetch.webdataset.path {text!r}: pipe: commands are not run; give {WHAT}")
    found: list[str] = []
    for part in expand_braces(text):
        scheme = urlsplit(part).scheme.lower() if "://" in part else ""
        if scheme and not is_url(part):
            raise ConfigError(f"fetch.webdataset.path {part!r}: unsupported URL scheme {scheme!r}; give {WHAT}")
        found += [part] if scheme else local_tars(part)
    return list(dict.fromkeys(found))


def check(out: Path, params: WebdatasetParams) -> None:
    """Before anything is written: the tars exist and the output holds none of them."""
    dst = out.resolve()
    for source in sources(params):
        if is_url(source):
            continue
        folder = Path(source).resolve().parent
        if dst == folder or dst in folder.parents:
            raise ConfigError(
                f"--out {out} would hold the tars it reads ({source}): give an --out outside their folder"
            )


# --- Sidecar files: img2dataset's parquet, dataset.json ----------------------------------------------


def sibling(source: str, name: str) -> str:
    """The path or URL of `name` in the same folder as `source`."""
    if is_url(source):
        parts = urlsplit(source)
        folder = parts.path.rsplit("/", 1)[0]
        return parts._replace(path=f"{folder}/{name}", query="", fragment="").geturl()
    return str(Path(source).parent / name)


def read_sidecar(where: str, client: Client, cap: int) -> bytes | None:
    """The bytes of a sidecar file (a path or URL), None when there is none; at most `cap` bytes."""
    if is_url(where):
        got = client.get(where)
        if got.http_status in (403, 404, 410):  # (a bucket without listing answers 403 for a missing key)
            return None
        if got.error:
            raise DownloadError(f"{where}: {got.error}")
        data = got.data
    else:
        if not Path(where).is_file():
            return None
        try:
            data = read_capped(Path(where), cap)
        except ImageError as exc:
            raise InputError(f"{where}: {exc}") from None
    if len(data) > cap:
        raise InputError(f"{where}: too large: {len(data)} bytes > max_member_bytes {cap}")
    return data


def class_names(tars: list[str], client: Client, cap: int) -> list[str] | None:
    """The "classes" of the dataset.json beside the tars, or else one folder up (where this project's
    shard layout keeps it, beside `shards/`), for `cls` labels; None without one."""
    for name in ("dataset.json", "../dataset.json"):
        names = _class_names(tars, name, client, cap)
        if names is not None:
            return names
    return None


def _class_names(tars: list[str], name: str, client: Client, cap: int) -> list[str] | None:
    found: dict[str, list[str]] = {}
    for where in dict.fromkeys(sibling(tar, name) for tar in tars):
        data = read_sidecar(where, client, cap)
        if data is None:
            continue
        try:
            names = json.loads(data).get("classes")
        except (ValueError, RecursionError, AttributeError):
            raise InputError(f"{where}: not a JSON object (the classes of the tars' cls indices)") from None
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) and not class_problem(n) for n in names):
            raise InputError(f'{where}: "classes" must be a list of class names (usable as folder names)')
        found[where] = names
    if len({tuple(names) for names in found.values()}) > 1:
        first, second = list(found)[:2]
        raise InputError(f"{first} and {second} name different classes: import their tars separately")
    return next(iter(found.values()), None)


def read_parquet(where: str, data: bytes, label: str, cap: int, max_rows: int) -> list[dict] | str:
    """img2dataset's rows of one shard (key, url, status, error_message and the label's column), or
    why the parquet is ignored. Its uncompressed size is checked before anything is decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        names = parquet.schema_arrow.names
        if not all(column in names for column in PARQUET_COLUMNS):
            return f"{where}: not img2dataset's parquet (no {' and '.join(PARQUET_COLUMNS)} columns): ignored"
        wanted = [
            c for c in dict.fromkeys(("key", "url", "status", "error_message", label_column(label))) if c in names
        ]
        meta = parquet.metadata
        if meta.num_rows > max_rows:
            raise InputError(f"{where}: {meta.num_rows} rows, more than max_members {max_rows}")
        size = sum(
            meta.row_group(g).column(c).total_uncompressed_size
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
            if meta.row_group(g).column(c).path_in_schema in wanted
        )
        if size > cap:
            raise InputError(f"{where}: expands to {size} bytes, more than max_member_bytes {cap}")
        return parquet.read(columns=wanted).to_pylist()
    except InputError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"{where}: not a readable parquet file ({type(exc).__name__}: {str(exc)[:120]})") from None


def label_column(label: str) -> str:
    """The parquet column holding a failed row's label: img2dataset keeps the caption, and the
    columns it was asked to save (the json fields)."""
    return "caption" if label == "txt" else label.partition(":")[2] if label.startswith("json:") else ""


# --- Labels -------------------------------------------------------------------------------------


def class_problem(name: str) -> str:
    """Why `name` cannot be a class folder, or ''."""
    if not name:
        return "empty"
    if name.startswith("."):
        return "starts with a dot"
    if any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a path separator or a control character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):  # (JSON's "\ud800": no file name has it)
        return "not valid Unicode text"
    if name in SIDECARS:
        return "the name of one of the dataset's own files"
    if len(name.encode()) > 255:
        return "longer than 255 bytes"
    return ""


def checked(value: object, what: str) -> tuple[str, str]:
    """(class, '') for a usable label value, else ('', the reason)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "", f"bad label: {what} is {json.dumps(value)[:80]}, not a string or an integer"
    name = str(value).strip()
    problem = class_problem(name)
    return ("", f"bad label: {what} {name[:80]!r} cannot name a class folder ({problem})") if problem else (name, "")


@dataclass
class Labeler:
    """The class of a sample, by `fetch.webdataset.label`."""

    label: str
    names: list[str] | None  # cls: dataset.json's classes
    order: dict[str, int] = field(default_factory=dict)  # cls: class -> index, for the class order

    def __call__(self, key: str, members: dict[str, Entry]) -> tuple[str, str]:
        ext = "json" if self.label.startswith("json:") else self.label
        entry = members.get(ext)
        if entry is None:
            return "", f"no label: the sample has no .{ext} member"
        if entry.problem:
            return "", f"bad label: {entry.name}: {entry.problem}"
        if ext == "json":
            fieldname = self.label.partition(":")[2]
            try:
                meta = json.loads(entry.data)
            except (ValueError, RecursionError):
                return "", f"bad label: {entry.name} is not JSON"
            if not isinstance(meta, dict) or fieldname not in meta:
                return "", f"no label: {entry.name} has no field {fieldname!r}"
            return checked(meta[fieldname], f"{entry.name} {fieldname!r}")
        text = entry.data.decode("utf-8", "replace").strip()
        if ext == "txt":
            return checked(text, entry.name)
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            return "", f"bad label: {entry.name} {text[:40]!r} is not a class index (an integer >= 0)"
        index = int(text)
        if self.names is not None and index >= len(self.names):
            return "", f"bad label: class index {index} is outside dataset.json's {len(self.names)} classes"
        name = self.names[index] if self.names is not None else str(index)
        self.order[name] = index
        return name, ""

    def sort(self, classes: set[str]) -> list[str]:
        """The class order: by index for `cls`, else alphabetical."""
        return sorted(classes, key=lambda c: (self.order.get(c, -1), c))


# --- Samples ------------------------------------------------------------------------------------


@dataclass
class Sample:
    key: str
    members: dict[str, Entry]  # extension (lower case) -> member, in tar order


def samples(entries: Iterator[Entry]) -> Iterator[Sample | Entry]:
    """Members grouped into samples (consecutive `<key>.<ext>`); a member whose name is not
    `<key>.<ext>` comes alone, as an Entry."""
    current: Sample | None = None
    for entry in entries:
        match = KEY.match(entry.name)
        if not match:
            yield entry
            continue
        key, ext = match[1], match[2].lower()
        if current is not None and (key != current.key or ext in current.members):
            yield current
            current = None
        if current is None:
            current = Sample(key, {})
        current.members[ext] = entry
    if current is not None:
        yield current


def sample_url(sample: Sample) -> str:
    """The url in the sample's .json (img2dataset and this project's shards record it), or ''."""
    entry = sample.members.get("json")
    if entry is None or entry.data is None:
        return ""
    try:
        url = json.loads(entry.data).get("url", "")
    except (ValueError, RecursionError, AttributeError):
        return ""
    return url if isinstance(url, str) else ""


@dataclass
class Budget:
    """What the import may still read: members and bytes of all the tars together."""

    members: int
    bytes: int

    def take(self, tar: str, entry: Entry) -> None:
        self.members -= 1
        self.bytes -= len(entry.data or b"")
        if self.members < 0:
            raise InputError(f"{tar}: the tars hold more than max_members members (fetch.webdataset.max_members)")
        if self.bytes < 0:
            raise InputError(
                f"{tar}: the tars expand to more than max_total_bytes (fetch.webdataset.max_total_bytes): "
                "raise it if that is expected"
            )


def shard_candidates(
    tar: str, local: Path, params: WebdatasetParams, budget: Budget, label: Labeler, rows: list[dict] | None
) -> Iterator[tuple[Candidate, str]]:
    """(candidate, url) for every sample of one tar, then for img2dataset's failed rows of it."""
    urls = {row["key"]: row.get("url") or "" for row in rows or () if isinstance(row.get("key"), str)}

    def counted() -> Iterator[Entry]:
        entries = iter_tar(local, params.max_member_bytes, params.max_total_bytes)
        while True:
            try:
                entry = next(entries)
            except StopIteration:
                return
            except InputError as exc:  # named by its path or URL; for a damaged tar, what to do
                text = str(exc).replace(str(local), tar)
                hint = "; repair it, or leave it out of fetch.webdataset.path" if "not a valid" in text else ""
                raise InputError(text + hint) from None
            budget.take(tar, entry)
            yield entry

    for item in samples(counted()):
        if isinstance(item, Entry):
            origin = f"{tar}#{item.name}"
            status, reason = ("failed", item.problem) if item.problem else ("skipped", NOT_SAMPLE)
            yield Candidate(origin, "", None, status, reason), ""
            continue
        origin = f"{tar}#{item.key}"
        url = urls.get(item.key) or urls.get(item.key.rsplit("/", 1)[-1]) or sample_url(item)
        cls, why = label(item.key, item.members)
        image = next((e for ext, e in item.members.items() if ext in IMAGE_EXTENSIONS), None)
        if image is None:
            yield Candidate(origin, cls, None, "skipped", NO_IMAGE), url
        elif image.problem:
            reason = image.problem if repr(image.name) in image.problem else f"{image.problem} ({image.name})"
            yield Candidate(origin, cls, None, "failed", reason), url
        elif why:
            yield Candidate(origin, "", None, "skipped", why), url
        else:
            yield Candidate(origin, cls, image.data), url
    column = label_column(label.label)
    for row in rows or ():
        if row.get("status") in ("success", None):
            continue
        cls = checked(row.get(column), column)[0] if column else ""
        status = row["status"] if row["status"] in IMG2DATASET_FAILURES else "failed"
        reason = row.get("error_message") or f"{row['status']}, no message"
        yield Candidate(f"{tar}#{row.get('key')}", cls, None, status, reason), row.get("url") or ""


def cached(url: str, cache: Path) -> Path:
    """Where a tar downloaded from `url` is kept: named by the URL's hash and its file name."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", urlsplit(url).path.rsplit("/", 1)[-1]) or "shard.tar"
    return cache / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name.lstrip('.') or 'shard.tar'}"


def candidates(
    tars: list[str], params: WebdatasetParams, client: Client, cache: Path, label: Labeler, warn: Callable[[str], None]
) -> Iterator[tuple[Candidate, str]]:
    budget = Budget(params.max_members, params.max_total_bytes)
    for tar in tars:
        local = client.download(tar, cached(tar, cache)) if is_url(tar) else Path(tar)
        rows = None
        stem = urlsplit(tar).path if is_url(tar) else tar
        base = re.sub(r"(\.tar|\.tar\.gz|\.tgz)$", "", stem.rsplit("/", 1)[-1], flags=re.I)
        where = sibling(tar, f"{base}.parquet")
        data = read_sidecar(where, client, params.max_member_bytes)
        if data is not None:
            rows = read_parquet(where, data, label.label, params.max_member_bytes, params.max_members)
            if isinstance(rows, str):
                warn(rows)
                rows = None
        yield from shard_candidates(tar, local, params, budget, label, rows)


def fetch(out: Path, params: WebdatasetParams, cfg: FetchParams) -> FetchResult:
    """Read every sample of the tars and store its image under `<out>/<class>/`, with its manifest row."""
    check(out, params)
    tars = sources(params)
    warnings: list[str] = []
    cache = download_cache(out, params.download_dir) / "webdataset"
    with Client(cfg.download, threads=1) as client:
        names = class_names(tars, client, params.max_member_bytes) if params.label == "cls" else None
        label = Labeler(params.label, names)
        urls: list[str] = []

        def items() -> Iterator[Candidate]:
            for cand, url in candidates(tars, params, client, cache, label, warnings.append):
                urls.append(url)
                yield cand

        out.mkdir(parents=True, exist_ok=True)
        rows = store_images(out, items(), [], cfg.download, f"Reading {len(tars)} tar(s)")
    for row, url in zip(rows, urls):  # the sample's key (img2dataset's), as the origin `<tar>#<key>` names it
        row["url"], row["key"] = url, row["origin"].rpartition("#")[2]
    classes = label.sort({row["class"] for row in rows if row["status"] == "success"})
    return write_manifest(out, rows, classes, "webdataset", warnings)
