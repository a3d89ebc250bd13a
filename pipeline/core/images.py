"""Reading images: header-only size probe, and the one decode + resize used by `prepare` and `predict`."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import ImageError

Aspect = Literal["stretch", "pad", "center-crop"]
Color = Literal["rgb", "grayscale"]

_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112
_HEAD_BYTES = 16384  # holds the markers up to the first scan of a JPEG without a large thumbnail
_MAX_HEADER_BYTES = 1 << 20  # a longer header is read by Pillow, lazily (never a whole huge file)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers
_SOS, _APP1, _APP2, _EXIF = 0xDA, 0xE1, 0xE2, b"Exif\x00\x00"
_REDUCED = {  # libjpeg decodes directly at 1/2, 1/4 or 1/8 size: far less work than a full decode
    ("rgb", 1): cv2.IMREAD_COLOR,
    ("rgb", 2): cv2.IMREAD_REDUCED_COLOR_2,
    ("rgb", 4): cv2.IMREAD_REDUCED_COLOR_4,
    ("rgb", 8): cv2.IMREAD_REDUCED_COLOR_8,
    ("grayscale", 1): cv2.IMREAD_GRAYSCALE,
    ("grayscale", 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    ("grayscale", 4): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    ("grayscale", 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


# We cap the pixel count ourselves, from the header, before any decoding (see `validate`).
Image.MAX_IMAGE_PIXELS = None

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
    "WEBP": "webp",
}  # stored file names
_HTML = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<title")


@dataclass(frozen=True)
class ImageInfo:
    format: str  # JPEG, PNG, GIF, BMP, TIFF or WEBP, from the magic bytes
    height: int  # as displayed (EXIF orientation applied)
    width: int
    dhash: int | None = None  # the 64-bit difference hash of the decoded pixels (`validate`); None = not decoded


def sniff(data: bytes) -> str | None:
    """The image format from the magic bytes (never the extension or Content-Type), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def _open(source: Path | bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError("not an image") from None


def _displayed_shape(im: Image.Image) -> tuple[int, int]:
    width, height = im.size
    # JPEG and TIFF parse EXIF with the header; for other formats Pillow would decode the pixels.
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1) if im.format in ("JPEG", "MPO", "TIFF") else 1
    except (OSError, SyntaxError, ValueError):
        orientation = 1
    return (width, height) if orientation in _ROTATED else (height, width)


def probe(source: Path | bytes) -> tuple[int, int]:
    """(height, width) as displayed, read from the file header without decoding pixels.

    Plain JPEGs, nearly every file in practice, are read by `_jpeg_shape` from their first bytes:
    3-4x faster than Pillow's parser, which stays the reference and reads everything else.
    """
    head = source if isinstance(source, bytes) else _read_head(source)
    if sniff(head) == "JPEG":
        shape = _jpeg_shape(head)
        if (
            shape is None and not isinstance(source, bytes) and len(head) == _HEAD_BYTES
        ):  # the header may go on past the bytes read
            with contextlib.suppress(OSError), open(source, "rb") as fh:
                shape = _jpeg_shape(fh.read(_MAX_HEADER_BYTES))
        if shape is not None:
            return shape
    with _open(source) as im:
        return _displayed_shape(im)


def _read_head(path: Path) -> bytes:
    """The first `_HEAD_BYTES` of a file; b"" when it cannot be read (Pillow then reports it).
    Plain os calls: no buffered file object to build for one read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, _HEAD_BYTES)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _jpeg_shape(data: bytes) -> tuple[int, int] | None:
    """(height, width) as displayed, from the markers of a well-formed JPEG up to its first scan,
    with the EXIF orientation applied as Pillow does; None for anything else (no scan within `data`,
    junk between markers, a second frame or EXIF block, XMP, MPO, a frame Pillow cannot read...), which
    leaves the answer to Pillow."""
    pos, end, shape, orientation, exif_seen = 2, len(data) - 4, None, 1, False
    while pos <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == _SOS:
            return None if shape is None else (shape[::-1] if orientation in _ROTATED else shape)
        if marker < 0xC0 or 0xD0 <= marker <= 0xD9:  # fill bytes, restart markers...: Pillow's business
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker in _SOF:
            if shape is not None or len(body) < 6 or body[0] != 8 or body[5] not in (1, 3, 4):
                return None
            shape = (int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"))
            if 0 in shape:
                return None
        elif marker == _APP1:
            if exif_seen or not body.startswith(_EXIF):  # (XMP can carry an orientation too)
                return None
            exif_seen, orientation = True, _exif_orientation(body[6:])
            if orientation is None:
                return None
        elif marker == _APP2 and body.startswith(b"MPF\x00"):  # a multi-picture file: Pillow opens it as MPO
            return None
        pos += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag of IFD0 (1 when absent); None when the block is not plain enough to be
    sure Pillow would read the same."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8 or int.from_bytes(tiff[2:4], order) != 42:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd < 8 or ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    entries = tiff[ifd + 2 : ifd + 2 + 12 * count]
    if len(entries) != 12 * count:
        return None
    found = [
        entries[i : i + 12]
        for i in range(0, len(entries), 12)
        if int.from_bytes(entries[i : i + 2], order) == _EXIF_ORIENTATION
    ]
    if not found:
        return 1
    entry = found[0]
    if len(found) > 1 or int.from_bytes(entry[2:4], order) != 3 or int.from_bytes(entry[4:8], order) != 1:  # one SHORT
        return None
    return int.from_bytes(entry[8:10], order)


def validate(data: bytes, max_pixels: int = 100_000_000, min_side: int = 16) -> ImageInfo:
    """Check that `data` is a whole, decodable image of sane size; raise ImageError(reason) if not.
    The pixels decoded give the image's difference hash too (ImageInfo.dhash).

    Order matters: magic bytes first (HTML error pages served as 200 are common), then the pixel
    count from the header (a tiny file can claim gigapixels), and only then a full decode, at
    reduced size for JPEG as fastai's verify_images does (1/8, at least 32 pixels a side). Pillow's
    decoder reports truncated files, which OpenCV 4.x silently returns with grey rows.
    """
    if not data:
        raise ImageError("empty file")
    fmt = sniff(data)
    if fmt is None:
        head = data[:1024].lstrip().lower()
        if head.startswith(_HTML) or b"<html" in head:
            raise ImageError("HTML page, not an image")
        raise ImageError("not an image: unknown file signature")
    with _open(data) as im:
        height, width = _displayed_shape(im)
        if height * width > max_pixels:
            raise ImageError(f"too many pixels: {width}x{height} > {max_pixels}")
        if min(height, width) < min_side:
            raise ImageError(f"too small: {width}x{height}, minimum side {min_side}")
        if fmt == "JPEG":
            im.draft("RGB", (max(32, im.size[0] // 8), max(32, im.size[1] // 8)))
        try:
            im.load()
            bits = imagehash.dhash(ImageOps.exif_transpose(im)).hash
        except (OSError, SyntaxError, ValueError) as exc:
            reason = "truncated" if "truncated" in str(exc) else "corrupt"
            raise ImageError(f"{reason}: {str(exc).splitlines()[0][:120]}") from None
    return ImageInfo(fmt, height, width, int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big"))


def dhash(data: bytes, max_pixels: int = 100_000_000) -> int:
    """The 64-bit difference hash of the image in `data` (imagehash's `dhash`, 8x8: the sign of each
    horizontal step of a 9x8 greyscale thumbnail), as an int, from the same decode as `validate`;
    ImageError for data that is not a whole, decodable image of at most `max_pixels`.

    Chosen by measurement (benchmarks/RESULTS.md, "audit"): on copies resized 0.5-2x, re-encoded at
    JPEG quality 60-95, cropped up to 5% and brightened +-10%, dhash at 8 bits finds 98% of them at
    99% precision; pHash needs 12 bits for as much (a search about 15 times the work), aHash at 7
    bits has 96% precision, wHash computes at half the rate. JPEGs are decoded at 1/8 size by libjpeg
    (at least 32 pixels a side): the thumbnail is 9x8. EXIF orientation is applied, so a copy rotated
    in its pixels and its original rotated by the EXIF flag hash alike.
    """
    return validate(data, max_pixels, min_side=1).dhash


def hex_hash(value: int | None) -> str:
    """A 64-bit hash as the manifest records it: 16 hex digits ("" for none)."""
    return "" if value is None else f"{value:016x}"


def _reduction(shape: tuple[int, int], size: tuple[int, int], aspect: Aspect) -> int:
    """The largest libjpeg scale factor that still leaves at least the pixels the target needs."""
    (h, w), (th, tw) = shape, size
    scale = min(th / h, tw / w) if aspect == "pad" else max(th / h, tw / w)
    for factor in (8, 4, 2):
        if scale * factor <= 1:
            return factor
    return 1


def fit(img: np.ndarray, size: tuple[int, int], aspect: Aspect) -> np.ndarray:
    """Resize to exactly `size` (height, width): stretch, letterbox with black (pad) or centre-crop."""
    th, tw = size
    h, w = img.shape[:2]
    if aspect == "stretch":
        return _resize(img, th, tw)
    scale = min(th / h, tw / w) if aspect == "pad" else max(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = _resize(img, nh, nw)
    if aspect == "center-crop":
        top, left = (nh - th) // 2, (nw - tw) // 2
        return img[top : top + th, left : left + tw]
    out = np.zeros((th, tw, *img.shape[2:]), dtype=img.dtype)
    top, left = (th - nh) // 2, (tw - nw) // 2
    out[top : top + nh, left : left + nw] = img
    return out


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    shrinking = h * w < img.shape[0] * img.shape[1]
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out.reshape(h, w, *img.shape[2:])  # cv2 drops a trailing channel axis of 1


def load(
    data: bytes,
    size: tuple[int, int],
    aspect: Aspect = "stretch",
    color: Color = "rgb",
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode image bytes to a (height, width, 3 or 1) uint8 array of exactly `size`.

    `shape` is the displayed (height, width) when already known (from `probe`); JPEGs at least twice
    the target size are decoded at reduced size by libjpeg. EXIF orientation is applied.
    """
    if not data:
        raise ImageError("empty file")
    shape = shape or probe(data)
    buf = np.frombuffer(data, np.uint8)
    if data[:2] == b"\xff\xd8":  # JPEG (grey, colour or CMYK): libjpeg converts and can decode reduced
        img = cv2.imdecode(buf, _REDUCED[(color, _reduction(shape, size, aspect))])
    else:
        img = _to_8bit_bgr(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
        if img is not None and color == "grayscale":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img is None:
        raise ImageError("cannot decode")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if color == "rgb" else img[..., None]
    return fit(img, size, aspect)


def _to_8bit_bgr(img: np.ndarray | None) -> np.ndarray | None:
    """Any decoded PNG/GIF/BMP/TIFF/WebP as 8-bit BGR: 16-bit scaled down, alpha flattened onto white."""
    if img is None:
        return None
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        alpha = img[..., 3:].astype(np.float32) / 255
        return (img[..., :3] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    return img
