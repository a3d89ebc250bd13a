"""Reading images: header-only size probe, and the one decode + resize used by `prepare` and `predict`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ImageError

Aspect = Literal["stretch", "pad", "center-crop"]
Color = Literal["rgb", "grayscale"]

_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112
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


def probe(source: Path | bytes) -> tuple[int, int]:
    """(height, width) as displayed, read from the file header without decoding pixels."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            width, height = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1) if im.format in ("JPEG", "TIFF", "WEBP", "PNG") else 1
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError("not an image") from None
    return (width, height) if orientation in _ROTATED else (height, width)


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


def load(data: bytes, size: tuple[int, int], aspect: Aspect = "stretch", color: Color = "rgb", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode image bytes to a (height, width, 3 or 1) uint8 array of exactly `size`.

    `shape` is the displayed (height, width) when already known (from `probe`); JPEGs at least twice
    the target size are decoded at reduced size by libjpeg. EXIF orientation is applied.
    """
    if not data:
        raise ImageError("empty file")
    shape = shape or probe(data)
    factor = _reduction(shape, size, aspect) if data[:2] == b"\xff\xd8" else 1
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[(color, factor)])
    if img is None:
        raise ImageError("cannot decode")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if color == "rgb" else img[..., None]
    return fit(img, size, aspect)
