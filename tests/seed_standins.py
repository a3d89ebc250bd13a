"""Small, faithful stand-ins for the real data of the seed experiments, built in memory, seeded.

Each is in the exact format its source reads (names, containers, encodings), with a few hundred to a
few thousand tiny images whose content depends on the class, so a model can learn something:

- `petimages_zip`: Microsoft's `kagglecatsanddogs_5340.zip` layout, `PetImages/Cat/<n>.jpg` and
  `PetImages/Dog/<n>.jpg`, mostly 96x128 (the real photos' 375x500 aspect), with a `Thumbs.db` per
  class, the 0-byte `Cat/666.jpg`, the non-image `Dog/11702.jpg` and the top-level licence and readme.
- `mnist_files`: the four gzipped IDX files, named as the mnist source requests them, of digits drawn
  with OpenCV's font.
- `cifar10_tarball`: `cifar-10-python.tar.gz` with `cifar-10-batches-py/data_batch_1..5`,
  `test_batch`, `batches.meta` (Python 2 protocol-2 pickles, as the official ones) and `readme.html`.
- `imagenet_site`: JPEGs for two synsets served by a Flickr-like path, a `fall11_urls.txt.gz`-style
  list (`<wnid>_<n><TAB><url>`, gzipped, with other synsets' lines too) in which some URLs are dead
  (404), redirect to Flickr's `photo_unavailable.png` or answer an HTML page, as real lists do.

`StandinServer` serves them from 127.0.0.1 (tests.httpserver.FileServer plus permanent redirects).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile

import cv2
import numpy as np

from tests.httpserver import Failure, FileServer

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGENET_WNIDS = ["n04194289", "n02834778"]  # seed 001: ships, bikes


class StandinServer(FileServer):
    """A FileServer whose `redirects` ({path: location}) answer 302 on every request, as Flickr does
    for a deleted photo."""

    def __init__(self, files: dict[str, bytes], redirects: dict[str, str] | None = None):
        super().__init__(files)
        self.redirects = dict(redirects or {})

    def _next_failure(self, path: str) -> Failure | None:
        if path in self.redirects:
            return Failure("status", 302, headers={"Location": self.redirects[path]})
        return super()._next_failure(path)


def jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """An RGB array as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth two-colour gradient (small JPEGs, unlike noise)."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0.0, 1.0, h)[:, None, None]
    return np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.uint8).copy()


# --- cats vs dogs ----------------------------------------------------------------------------------


def pet_image(rng: np.random.Generator, cat: bool, h: int, w: int) -> np.ndarray:
    """A cat is an ellipse on a warmer background, a dog a rectangle on a cooler one."""
    img = _background(rng, h, w).astype(np.int16)
    img[..., 0 if cat else 2] += 40
    img = np.clip(img, 0, 255).astype(np.uint8)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    cy, cx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
    ry, rx = int(rng.integers(h // 8, h // 3)), int(rng.integers(w // 8, w // 3))
    if cat:
        cv2.ellipse(img, (cx, cy), (rx, ry), 0, 0, 360, colour, -1)
    else:
        cv2.rectangle(img, (cx - rx, cy - ry), (cx + rx, cy + ry), colour, -1)
    return img


def petimages_zip(per_class: int = 300, seed: int = 0) -> bytes:
    """The PetImages zip: `per_class` good images per class, 80% of them 96x128, plus the broken files
    the real one has, under their real names."""
    rng = np.random.default_rng(seed)
    shapes = [(96, 128)] * 8 + [(128, 96), (90, 120)]
    broken = {"Cat": {666: b""}, "Dog": {11702: b"\x00" * 100 + b"not an image"}}  # 0 bytes; not an image
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not deflate
        zf.writestr("CDLA-Permissive-2.0.pdf", b"%PDF-1.5\n% licence text\n")
        zf.writestr("readme[1].txt", b"Microsoft cats and dogs dataset\r\n")
        for folder in ("Cat", "Dog"):
            numbers = [n for n in range(per_class + 1) if n not in broken[folder]][:per_class]
            for n in sorted([*numbers, *broken[folder]]):
                name = f"PetImages/{folder}/{n}.jpg"
                if n in broken[folder]:
                    zf.writestr(name, broken[folder][n])
                else:
                    h, w = shapes[int(rng.integers(len(shapes)))]
                    zf.writestr(name, jpeg(pet_image(rng, folder == "Cat", h, w)))
            zf.writestr(f"PetImages/{folder}/Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1000))
    return buf.getvalue()


# --- MNIST ----------------------------------------------------------------------------------------


def idx(array: np.ndarray) -> bytes:
    """A gzipped IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` 28x28 white-on-black digits (labels cycle 0..9), drawn at a jittered place, size and weight."""
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        scale, thickness = float(rng.uniform(0.7, 0.95)), int(rng.integers(1, 3))
        org = (int(rng.integers(4, 10)), int(rng.integers(20, 26)))
        cv2.putText(images[i], str(label), org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    order = rng.permutation(n)
    return images[order], labels[order]


def mnist_files(n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict[str, bytes]:
    """The four files, by the names the mnist source requests."""
    rng = np.random.default_rng(seed)
    train_x, train_y = digits(n_train, rng)
    test_x, test_y = digits(n_test, rng)
    return {
        "train-images-idx3-ubyte.gz": idx(train_x),
        "train-labels-idx1-ubyte.gz": idx(train_y),
        "t10k-images-idx3-ubyte.gz": idx(test_x),
        "t10k-labels-idx1-ubyte.gz": idx(test_y),
    }


# --- CIFAR-10 -------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the official batches: str and bytes as BINSTRING and numpy's
    old module path, so loading needs `encoding="bytes"`, exactly as for the real files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_string(self, obj) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        self.write(
            pickle.SHORT_BINSTRING + bytes([len(data)]) + data
            if len(data) < 256
            else pickle.BINSTRING + struct.pack("<i", len(data)) + data
        )
        self.memoize(obj)

    dispatch[str] = save_string
    dispatch[bytes] = save_string

    def save_global(self, obj, name=None) -> None:
        if getattr(obj, "__name__", "") == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """32x32 RGB: each class its own hue, a random darker disc or bar on it, some noise."""
    labels = [int(v) for v in rng.permutation(np.arange(n) % 10)]
    images = np.empty((n, 32, 32, 3), np.uint8)
    for i, label in enumerate(labels):
        hsv = np.zeros((32, 32, 3), np.uint8)
        hsv[..., 0], hsv[..., 1], hsv[..., 2] = label * 18, 200, int(rng.integers(150, 256))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        x, y = int(rng.integers(6, 26)), int(rng.integers(6, 26))
        if label % 2:
            cv2.circle(img, (x, y), int(rng.integers(3, 8)), (40, 40, 40), -1)
        else:
            cv2.rectangle(img, (x - 5, y - 2), (x + 5, y + 2), (40, 40, 40), -1)
        images[i] = np.clip(img.astype(np.int16) + rng.integers(-20, 21, img.shape), 0, 255)
    return images, labels


def cifar10_tarball(per_batch: int = 60, n_test: int = 100, seed: int = 0) -> bytes:
    """`cifar-10-python.tar.gz`: five training batches of `per_batch` images and a test batch."""
    rng = np.random.default_rng(seed)
    members = {
        "cifar-10-batches-py/batches.meta": py2_pickle(
            {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}
        )
    }
    for name in [
        "data_batch_4",
        "test_batch",
        "data_batch_1",
        "data_batch_3",
        "data_batch_2",
        "data_batch_5",
    ]:  # the real tarball's order
        n = n_test if name == "test_batch" else per_batch
        images, labels = cifar_images(n, rng)
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane per row
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {name[-1]} of 5"
        members[f"cifar-10-batches-py/{name}"] = py2_pickle(
            {
                "batch_label": label,
                "labels": labels,
                "data": data,
                "filenames": [f"img_{name}_{i}.png" for i in range(n)],
            }
        )
    members["cifar-10-batches-py/readme.html"] = (
        b"<meta HTTP-EQUIV='REFRESH' content='0; url=http://www.cs.toronto.edu/~kriz/cifar.html'>"
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1244000000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- ImageNet synsets -----------------------------------------------------------------------------


def synset_image(rng: np.random.Generator, wnid: str) -> np.ndarray:
    """A 'ship' (grey hull on blue water under sky) or a 'bike' (two dark wheels on a light ground)."""
    h, w = int(rng.integers(120, 241)), int(rng.integers(160, 321))
    if wnid == IMAGENET_WNIDS[0]:
        img = np.empty((h, w, 3), np.uint8)
        horizon = int(h * rng.uniform(0.4, 0.6))
        img[:horizon] = (150, 190, 230)
        img[horizon:] = (20, 60, int(rng.integers(110, 170)))
        x0 = int(rng.integers(0, w // 2))
        hull = np.array(
            [
                [x0, horizon - h // 10],
                [x0 + w // 2, horizon - h // 10],
                [x0 + w // 2 - w // 12, horizon + h // 12],
                [x0 + w // 12, horizon + h // 12],
            ],
            np.int32,
        )
        cv2.fillPoly(img, [hull], (90, 90, 95))
    else:
        img = np.full((h, w, 3), (int(rng.integers(180, 240)),) * 3, np.uint8)
        r, y = h // 5, int(h * rng.uniform(0.55, 0.7))
        x = int(rng.integers(r + 2, max(r + 3, w - 3 * r - 2)))
        for cx in (x, x + 2 * r + w // 10):
            cv2.circle(img, (cx, y), r, (30, 30, 30), max(2, r // 5))
        cv2.line(img, (x, y), (x + r + w // 20, y - r), (180, 20, 20), 3)
    return img


def imagenet_site(base_url: str, per_wnid: int = 220, seed: int = 0) -> tuple[dict[str, bytes], dict[str, str], bytes]:
    """(files, redirects, fall11_urls.txt.gz bytes) for the two synsets, served under `base_url`.

    Of each synset's `per_wnid` URLs, every 10th is dead (404), every 10th + 3 redirects to Flickr's
    `photo_unavailable.png` and every 25th + 7 answers an HTML page, so the source has to draw further
    candidates to fill 100 + 50 images. Lines of another synset are mixed in and must be ignored.
    """
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {
        "/images/photo_unavailable.png": cv2.imencode(".png", np.full((374, 500, 3), 240, np.uint8))[1].tobytes()
    }
    redirects: dict[str, str] = {}
    lines = []
    for wnid in ["n01440764", *IMAGENET_WNIDS]:  # tench: in the file, not wanted
        count = 5 if wnid not in IMAGENET_WNIDS else per_wnid
        for n in range(count):
            path = f"/photos/{wnid}/{n}_{rng.integers(10**9):09d}.jpg"
            lines.append(f"{wnid}_{n}\t{base_url}{path}")
            if n % 10 == 0:
                continue  # dead link: 404
            if n % 10 == 3:
                redirects[path] = "/images/photo_unavailable.png"
            elif n % 25 == 7:
                files[path] = b"<!DOCTYPE html><html><body>This photo is no longer available</body></html>"
            else:
                files[path] = jpeg(synset_image(rng, wnid), quality=85)
    return files, redirects, gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
