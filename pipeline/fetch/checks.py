"""The verdict on one fetched URL, the same in every layout: its manifest row and, for a usable
image, its bytes and header facts.

Checks, in order: the HTTP outcome (errors, caps and timeouts come from pipeline.fetch.http as
values); Flickr's "photo unavailable" placeholder (a redirect to its name, or its bytes) and any
placeholder listed in `fetch.download.placeholder_sha256`; then the image itself
(pipeline.core.images.validate: magic bytes, header size, pixel cap, a decode), or with
`fetch.download.verify: header` the same checks without the pixel decode (`check_header`).
"""

from __future__ import annotations

import hashlib

from pipeline.core.errors import ImageError
from pipeline.core.images import ImageInfo, hex_hash, probe, sniff, validate
from pipeline.fetch.http import Fetched
from pipeline.fetch.params import DownloadSettings

# Flickr answers deleted photos with a valid 2,051-byte PNG, often after a redirect to this name.
FLICKR_PLACEHOLDER_MD5 = "880a7a58e05d3e83797f27573bb6d35c"
PLACEHOLDER_URL_MARK = "photo_unavailable"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(url: str, cls: str, status: str, reason: str = "", **fields) -> dict:
    return {"url": url, "class": cls, "status": status, "error_message": reason, **fields}


def judge(got: Fetched, cls: str, settings: DownloadSettings) -> tuple[dict, bytes | None, ImageInfo | None]:
    """The verdict on one fetched URL, shared by both layouts: its manifest row (status before
    dedupe, no `path` yet) and, for a usable image, its bytes and header facts.

    The MD5 for Flickr's placeholder is computed for PNGs only (the placeholder is one): MD5 costs
    as much CPU as the whole HTTP exchange for a JPEG.
    """
    url = got.url
    timing = {"http_status": got.http_status or "", "elapsed_ms": got.elapsed_ms}
    if got.error:
        refused = got.error.startswith(("unsupported URL", "malformed URL", "refused"))
        status = "skipped" if refused else "failed_to_download"
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
    shape = {"width": info.width, "height": info.height, "format": info.format}
    return _row(url, cls, "success", **fields, dhash=hex_hash(info.dhash), **shape), data, info


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
        # EOI after the start of its last scan; trailing bytes after the EOI are tolerated. (The
        # first scan is found from the front and later ones after the EOI: two short searches,
        # not one over the whole file.)
        eoi = data.rfind(b"\xff\xd9")
        whole = 0 <= data.find(b"\xff\xda") < eoi and data.find(b"\xff\xda", eoi) < 0
        return "" if whole else "no end-of-image marker after the last scan"
    if fmt == "PNG":
        return "" if b"IEND\xaeB`\x82" in data[-4096:] else "no IEND chunk"
    if fmt == "GIF":
        return "" if data.rstrip(b"\x00").endswith(b";") else "no GIF trailer"
    if fmt == "WEBP":
        return "" if len(data) >= 8 + int.from_bytes(data[4:8], "little") else "shorter than its RIFF size"
    if fmt == "BMP":
        return "" if len(data) >= int.from_bytes(data[2:6], "little") else "shorter than its BMP size"
    return ""
