"""pipeline.core.images: header-only probe and the decode + resize used by prepare."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.core.errors import ImageError
from pipeline.core.images import load, probe, validate

ORIENTATION = 0x0112


def encode(arr: np.ndarray, fmt: str = "JPEG", orientation: int | None = None, **kwargs) -> bytes:
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        kwargs["exif"] = exif
    Image.fromarray(arr).save(buf, fmt, **kwargs)
    return buf.getvalue()


def solid(h: int, w: int, rgb=(200, 200, 200)) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()


def gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1).astype(np.uint8)


def halves(h: int, w: int) -> np.ndarray:
    """Top half red, bottom half blue: orientation-sensitive."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, :, 0] = 255
    arr[h // 2 :, :, 2] = 255
    return arr


# --- probe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_probe_bytes(fmt):
    assert probe(encode(solid(40, 60), fmt)) == (40, 60)
    assert probe(encode(solid(70, 30), fmt)) == (70, 30)


@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", ".jpg"), ("PNG", ".png")])
def test_probe_path(tmp_path, fmt, suffix):
    path = tmp_path / f"img{suffix}"
    path.write_bytes(encode(solid(33, 47), fmt))
    assert probe(path) == (33, 47)


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_probe_rotated_exif_swaps_height_and_width(orientation):
    assert probe(encode(solid(40, 60), orientation=orientation)) == (60, 40)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_probe_unrotated_exif_keeps_shape(orientation):
    assert probe(encode(solid(40, 60), orientation=orientation)) == (40, 60)


def test_probe_rotated_exif_path(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encode(solid(40, 60), orientation=6))
    assert probe(path) == (60, 40)


@pytest.mark.parametrize("data", [b"", b"hello, this is not an image", bytes(range(256)) * 4])
def test_probe_non_image_bytes(data):
    with pytest.raises(ImageError):
        probe(data)


def test_probe_non_image_and_empty_files(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(ImageError):
            probe(path)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def _exif_block(order: bytes, tag_type: int, count: int, value: int) -> bytes:
    """An EXIF APP1 payload with one IFD0 entry: the orientation, of the given type and count."""
    end = "little" if order == b"II" else "big"
    entry = (
        ORIENTATION.to_bytes(2, end)
        + tag_type.to_bytes(2, end)
        + count.to_bytes(4, end)
        + value.to_bytes(2, end)
        + bytes(2)
    )
    return (
        b"Exif\x00\x00" + order + (42).to_bytes(2, end) + (8).to_bytes(4, end) + (1).to_bytes(2, end) + entry + bytes(4)
    )


def _jpeg_variants() -> dict[str, bytes]:
    """JPEGs whose headers take every branch of the fast reader, and its fall-backs to Pillow."""
    base = encode(gradient(40, 60))
    big_exif = Image.Exif()
    big_exif[ORIENTATION] = 6
    big_exif[0x010E] = "x" * 30000  # ImageDescription: an APP1 longer than the first read
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    return {
        "baseline": base,
        "progressive": encode(gradient(40, 60), progressive=True),
        "grayscale": encode(gradient(40, 60)[..., 0]),
        "cmyk": _cmyk_jpeg(40, 60),
        **{f"orientation-{o}": encode(gradient(40, 60), orientation=o) for o in range(1, 9)},
        "exif-beyond-first-read": encode(gradient(40, 60), exif=big_exif),
        "xmp-orientation": encode(gradient(40, 60), xmp=xmp),
        "big-endian-exif": _after_soi(base, _segment(0xE1, _exif_block(b"MM", 3, 1, 6))),
        "orientation-as-long": _after_soi(base, _segment(0xE1, _exif_block(b"II", 4, 1, 6))),
        "two-exif-blocks": _after_soi(
            base, _segment(0xE1, _exif_block(b"II", 3, 1, 6)), _segment(0xE1, _exif_block(b"II", 3, 1, 1))
        ),
        "not-tiff-exif": _after_soi(base, _segment(0xE1, b"Exif\x00\x00garbage!")),
        "fill-bytes": base[:2] + b"\xff\xff" + base[2:],
        "comment": _after_soi(base, _segment(0xFE, b"made by a test")),
        "truncated-pixels": encode(gradient(200, 300))[:-500],
        "truncated-header": base[:40],
        "no-frame": base[:2] + _segment(0xFE, b"no frame") + b"\xff\xda",
    }


def _cmyk_jpeg(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gradient(h, w)).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def _pillow_shape(data: bytes) -> tuple[int, int] | None:
    """The reference: Pillow's size and orientation (EXIF, else XMP); None where Pillow cannot open it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            orientation = im.getexif().get(ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError):
        return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


@pytest.mark.parametrize("name", sorted(_jpeg_variants()))
def test_probe_agrees_with_pillow_on_every_kind_of_jpeg_header(tmp_path, name):
    data = _jpeg_variants()[name]
    path = tmp_path / "img.jpg"
    path.write_bytes(data)
    expected = _pillow_shape(data)
    for source in (data, path):
        if expected is None:
            with pytest.raises(ImageError):
                probe(source)
        else:
            assert probe(source) == expected, source if isinstance(source, Path) else "bytes"
    if not name.startswith(("truncated", "no-frame")):  # decodable: the displayed pixels agree too
        with Image.open(io.BytesIO(data)) as im:
            width, height = ImageOps.exif_transpose(im).size
        assert (height, width) == expected


# --- load: shapes and aspect modes ---------------------------------------------------------------


@pytest.mark.parametrize("aspect", ["stretch", "pad", "center-crop"])
@pytest.mark.parametrize(("color", "channels"), [("rgb", 3), ("grayscale", 1)])
@pytest.mark.parametrize("size", [(20, 30), (25, 25), (30, 16), (37, 61)])
def test_load_exact_shape(aspect, color, channels, size):
    out = load(encode(gradient(40, 60)), size, aspect, color)
    assert out.shape == (*size, channels)
    assert out.dtype == np.uint8


def test_load_empty_raises():
    with pytest.raises(ImageError, match="empty"):
        load(b"", (10, 10))


def test_load_non_image_raises():
    with pytest.raises(ImageError):
        load(b"this is plain text, no pixels here", (10, 10))


def test_load_truncated_jpeg_raises():
    data = encode((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8), quality=95)
    truncated = data[: len(data) // 3]
    assert probe(truncated) == (40, 60)  # the header survives ...
    with pytest.raises(ImageError):  # ... but the pixels do not
        load(truncated, (20, 30))


def test_pad_leaves_black_borders():
    out = load(encode(solid(40, 60)), (60, 60), "pad")  # wide image in a square: bars top and bottom
    assert out.shape == (60, 60, 3)
    assert out[:8].max() == 0 and out[-8:].max() == 0
    assert out[12:48].min() > 150  # the image itself fills the middle rows, full width
    tall = load(encode(solid(60, 30)), (30, 30), "pad")  # tall image: bars left and right
    assert tall[:, :5].max() == 0 and tall[:, -5:].max() == 0
    assert tall[:, 10:20].min() > 150


def test_center_crop_has_no_borders():
    out = load(encode(solid(40, 60)), (60, 60), "center-crop")
    assert out.min() > 150
    out = load(encode(solid(60, 30)), (30, 30), "center-crop")
    assert out.min() > 150


def test_center_crop_takes_the_middle():
    arr = np.zeros((40, 120, 3), np.uint8)  # black | white | black thirds
    arr[:, 40:80] = 255
    out = load(encode(arr, "PNG"), (40, 40), "center-crop")
    assert out[:, 5:35].min() > 200


def test_stretch_uses_whole_image():
    arr = np.zeros((40, 120, 3), np.uint8)
    arr[:, :40] = 255  # left third white
    out = load(encode(arr, "PNG"), (40, 40), "stretch")
    assert out[:, :10].min() > 200 and out[:, -10:].max() < 50


def test_channel_order_is_rgb():
    for fmt in ("JPEG", "PNG"):
        out = load(encode(solid(40, 60, (255, 0, 0)), fmt), (20, 30))
        r, g, b = (out[..., c].mean() for c in range(3))
        assert r > 240 and g < 15 and b < 15, (fmt, r, g, b)


def test_grayscale_single_channel_luminance():
    white = load(encode(solid(40, 60, (255, 255, 255))), (20, 30), color="grayscale")
    black = load(encode(solid(40, 60, (0, 0, 0))), (20, 30), color="grayscale")
    assert white.shape == (20, 30, 1) and white.min() > 240 and black.max() < 15


def test_png_input():
    arr = gradient(40, 60)
    out = load(encode(arr, "PNG"), (40, 60))
    np.testing.assert_array_equal(out, arr)  # lossless and same size: no resampling at all


def test_upscaling():
    arr = gradient(20, 30)
    out = load(encode(arr, "PNG"), (80, 120))
    assert out.shape == (80, 120, 3)
    ref = cv2.resize(arr, (120, 80), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out.astype(int) - ref).mean() < 1


def test_exif_orientation_applied_on_load():
    data = encode(halves(40, 60), orientation=6)  # rotate 90 clockwise for display
    out = load(data, (60, 40))
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert ref.shape == out.shape
    assert np.abs(out.astype(int) - ref).mean() < 3
    # the red top half is now on the right
    assert out[:, -10:, 0].mean() > 200 and out[:, :10, 0].mean() < 50


def test_shape_argument_matches_probe():
    data = encode(gradient(80, 120), quality=95)
    np.testing.assert_array_equal(load(data, (20, 30), shape=probe(data)), load(data, (20, 30)))


# --- reduced JPEG decode -------------------------------------------------------------------------


def full_decode_area(data: bytes, size: tuple[int, int]) -> np.ndarray:
    full = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(full, (size[1], size[0]), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(
    ("size", "flag"),
    [
        ((120, 160), cv2.IMREAD_REDUCED_COLOR_2),
        ((60, 80), cv2.IMREAD_REDUCED_COLOR_4),
        ((30, 40), cv2.IMREAD_REDUCED_COLOR_8),
    ],
)
def test_reduced_decode_close_to_full_decode(monkeypatch, size, flag):
    data = encode(gradient(240, 320), quality=95)
    flags = []
    real = cv2.imdecode

    def spy(buf, mode):
        flags.append(mode)
        return real(buf, mode)

    monkeypatch.setattr(cv2, "imdecode", spy)
    out = load(data, size)
    monkeypatch.undo()
    assert flags == [flag]  # the reduced path was really taken
    ref = full_decode_area(data, size)
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 6


def test_no_reduction_when_target_over_half(monkeypatch):
    data = encode(gradient(240, 320), quality=95)
    flags = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, mode: flags.append(mode) or real(buf, mode))
    load(data, (130, 170))
    monkeypatch.undo()
    assert flags == [cv2.IMREAD_COLOR]


def test_reduced_decode_with_exif_rotation():
    data = encode(halves(160, 240), orientation=6, quality=95)  # displayed 240x160
    out = load(data, (60, 40))
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    ref = cv2.resize(ref, (40, 60), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 6


def test_reduced_decode_grayscale():
    data = encode(gradient(240, 320), quality=95)
    out = load(data, (30, 40), color="grayscale")
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    ref = cv2.resize(full, (40, 30), interpolation=cv2.INTER_AREA)
    assert out.shape == (30, 40, 1)
    assert np.abs(out[..., 0].astype(int) - ref.astype(int)).mean() < 6


@pytest.mark.parametrize("h, w, ok", [(16, 40, True), (40, 16, True), (15, 40, False), (40, 15, False)])
def test_validate_min_side_is_inclusive(h, w, ok):
    """min_side is the smallest side allowed: an image exactly that small is kept."""
    data = encode(gradient(h, w), "PNG")
    if ok:
        assert validate(data, min_side=16).height == h
    else:
        with pytest.raises(ImageError, match=f"too small: {w}x{h}, minimum side 16"):
            validate(data, min_side=16)
