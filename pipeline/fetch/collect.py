"""Download images from URL lists into a class-folder dataset: every URL accounted for.

Used by the URL-list sources (imagenet). Per URL: fetch (pipeline.fetch.download), reject placeholders,
validate (pipeline.core.images), store under `<out>/<class>/<sha256>.<ext>` atomically. Each finished URL
is appended to a journal at once, so a run killed at any point (even `kill -9`) resumes where it
stopped without downloading finished URLs again; failed URLs are retried on the next run.

Quotas are met in waves: each wave tries, per class, as many untried candidates as images are still
missing, so which URLs are tried, and every row of the manifest, is the same whatever order
downloads finish in. Duplicates (same content from two URLs) and the train/val split are settled
by candidate order at the end.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.console import progress
from pipeline.core.dataset import read_manifest
from pipeline.core.errors import ImageError
from pipeline.core.images import ImageInfo, probe, sniff, validate
from pipeline.fetch.download import DownloadSettings, Fetched, fetch_bytes, make_session
from pipeline.fetch.manifest import FetchResult, write_image, write_manifest

JOURNAL = ".journal.jsonl"
# Flickr answers deleted photos with a valid 2,051-byte PNG, often after a redirect to this name.
FLICKR_PLACEHOLDER_MD5 = "880a7a58e05d3e83797f27573bb6d35c"
PLACEHOLDER_URL_MARK = "photo_unavailable"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Quota:
    train: int
    val: int = 0

    @property
    def total(self) -> int:
        return self.train + self.val


def _row(url: str, cls: str, status: str, reason: str = "", **fields) -> dict:
    return {"url": url, "class": cls, "status": status, "reason": reason, **fields}


def judge(got: Fetched, cls: str, settings: DownloadSettings) -> tuple[dict, bytes | None, ImageInfo | None]:
    """The verdict on one fetched URL, shared by both layouts: its manifest row (status before
    dedupe, no `path` yet) and, for a usable image, its bytes and header facts.

    The MD5 for Flickr's placeholder is computed for PNGs only (the placeholder is one): MD5 costs
    as much CPU as the whole HTTP exchange for a JPEG.
    """
    url = got.url
    timing = {"http_status": got.http_status or "", "elapsed_ms": got.elapsed_ms}
    if got.error:
        status = "skipped" if got.error.startswith(("unsupported URL", "malformed URL")) else "failed"
        return _row(url, cls, status, got.error, **timing), None, None
    data = got.data
    fields = {**timing, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if PLACEHOLDER_URL_MARK in got.final_url:
        return _row(url, cls, "skipped", "placeholder: redirected to photo_unavailable", **fields), None, None
    if (data[:8] == PNG_MAGIC and hashlib.md5(data).hexdigest() == FLICKR_PLACEHOLDER_MD5) or fields[
        "sha256"
    ] in settings.placeholder_sha256:
        return _row(url, cls, "skipped", "placeholder image", **fields), None, None
    try:
        info = (
            validate(data, settings.max_pixels, settings.min_side)
            if settings.verify in ("decode", "auto")
            else check_header(data, settings.max_pixels, settings.min_side)
        )
    except ImageError as exc:
        return _row(url, cls, "skipped", str(exc), **fields), None, None
    return _row(url, cls, "ok", **fields, width=info.width, height=info.height, format=info.format), data, info


def check_header(data: bytes, max_pixels: int, min_side: int) -> ImageInfo:
    """`validate` without the pixel decode (`fetch.download.verify: header`): the same magic-byte,
    pixel-count and size checks, and truncation found from the end-of-image structure (a JPEG's
    EOI marker after its last scan, PNG's IEND, GIF's trailer, the RIFF/BMP size). Corrupt data
    inside a complete file is left for `prepare`, which decodes every image anyway."""
    fmt = sniff(data)
    if fmt is None or not data:
        validate(data, max_pixels, min_side)  # raises the same reason as the decode check
    cut = _cut_short(data, fmt)
    if cut:
        raise ImageError(f"truncated: {cut}")
    try:
        height, width = probe(data)
    except ImageError:
        raise ImageError("corrupt: unreadable header") from None
    if height * width > max_pixels:
        raise ImageError(f"too many pixels: {width}x{height} > {max_pixels}")
    if min(height, width) < min_side:
        raise ImageError(f"too small: {width}x{height}, minimum side {min_side}")
    return ImageInfo(fmt, height, width)


def _cut_short(data: bytes, fmt: str) -> str:
    """Why `data` is not a whole file of format `fmt`, or "" (cheap structural checks only)."""
    if fmt == "JPEG":
        # Entropy-coded data never holds FF D9 (FF is stuffed as FF 00), so a whole file has its
        # EOI after the start of its last scan; trailing bytes after the EOI are tolerated.
        return (
            ""
            if data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0
            else "no end-of-image marker after the last scan"
        )
    if fmt == "PNG":
        return "" if b"IEND\xaeB`\x82" in data[-4096:] else "no IEND chunk"
    if fmt == "GIF":
        return "" if data.rstrip(b"\x00").endswith(b";") else "no GIF trailer"
    if fmt == "WEBP":
        return "" if len(data) >= 8 + int.from_bytes(data[4:8], "little") else "shorter than its RIFF size"
    if fmt == "BMP":
        return "" if len(data) >= int.from_bytes(data[2:6], "little") else "shorter than its BMP size"
    return ""


def process(session, url: str, cls: str, out: Path, settings: DownloadSettings) -> dict:
    """Fetch, check and store one URL; the manifest row says what happened (status before dedupe)."""
    row, data, info = judge(fetch_bytes(session, url, settings), cls, settings)
    if data is not None:
        row["path"] = write_image(out, cls, data, row["sha256"], info)
    return row


def _load_done(out: Path) -> dict[str, dict]:
    """Rows of URLs finished by earlier runs (manifest, then journal), keyed by (class, url)."""
    done: dict = {}
    manifest = read_manifest(out)
    if manifest is not None:
        for row in manifest.to_dict("records"):
            done[(row["class"], row["url"])] = row
    journal = out / JOURNAL
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the last line of a killed run may be cut short
                continue
            done[(row["class"], row["url"])] = row
    # A failed URL gets another chance; a duplicate is re-settled from its underlying ok row.
    return {
        key: {**row, "status": "ok"} if row["status"] == "duplicate" else row
        for key, row in done.items()
        if row["status"] != "failed"
    }


def _settle(
    rows: list[dict], order: dict[tuple[str, str], int], classes: list[str], quotas: dict[str, Quota]
) -> list[dict]:
    """Mark duplicates and assign splits by candidate order; returns the final rows."""
    rows = sorted(rows, key=lambda r: (classes.index(r["class"]), order.get((r["class"], r["url"]), 1 << 60), r["url"]))
    first: dict[str, dict] = {}
    taken = {cls: 0 for cls in classes}
    settled = []
    for row in rows:
        row = {**row, "split": ""}
        if row["status"] == "ok":
            owner = first.setdefault(row["sha256"], row)
            if owner is not row:
                row.update(status="duplicate", reason=f"duplicate of {owner['url']}", path=owner["path"])
            else:
                quota, n = quotas[row["class"]], taken[row["class"]]
                row["split"] = "train" if n < quota.train else "val" if n < quota.total else "extra"
                taken[row["class"]] += 1
        settled.append(row)
    return settled


def collect(
    candidates: dict[str, list[str]], quotas: dict[str, Quota], out: Path, settings: DownloadSettings, source: str
) -> FetchResult:
    """Download until each class has its quota of distinct valid images or runs out of candidates."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob(".*.tmp*"):  # temporary files of a run killed mid-write
        stale.unlink()
    classes = list(candidates)
    for cls in classes:
        (out / cls).mkdir(exist_ok=True)
    order = {(cls, url): i for cls, urls in candidates.items() for i, url in enumerate(dict.fromkeys(urls))}
    done = _load_done(out)
    lock = threading.Lock()
    session = make_session(settings)
    with open(out / JOURNAL, "a") as journal, ThreadPoolExecutor(max_workers=settings.concurrency) as pool:

        def work(job: tuple[str, str]) -> dict:
            cls, url = job
            row = process(session, url, cls, out, settings)
            with lock:
                journal.write(json.dumps(row) + "\n")
                journal.flush()
            return row

        tried = {cls: [url for url in dict.fromkeys(urls) if (cls, url) in done] for cls, urls in candidates.items()}
        untried = {
            cls: [url for url in dict.fromkeys(urls) if (cls, url) not in done] for cls, urls in candidates.items()
        }
        while True:
            settled = _settle(list(done.values()), order, classes, quotas)
            have = {cls: sum(1 for r in settled if r["class"] == cls and r["status"] == "ok") for cls in classes}
            wave = []
            for cls in classes:
                need = quotas[cls].total - have[cls]
                wave += [(cls, url) for url in untried[cls][: max(need, 0)]]
                untried[cls] = untried[cls][max(need, 0) :]
            if not wave:
                break
            for row in progress(pool.map(work, wave), f"Downloading {len(wave)} URLs", total=len(wave)):
                done[(row["class"], row["url"])] = row
                tried[row["class"]].append(row["url"])
    session.close()
    warnings = [
        f"class {cls}: {have[cls]} of {quotas[cls].total} images after trying all {len(tried[cls])} URLs of its list"
        for cls in classes
        if have[cls] < quotas[cls].total
    ]
    result = write_manifest(out, settled, classes, source, warnings)
    (out / JOURNAL).unlink()  # everything it held is in manifest.csv now
    return result
