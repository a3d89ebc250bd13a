"""The mnist and cifar10 sources, from tiny archives built here in the real formats and served locally."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import InputError
from pipeline.fetch.http import DownloadError
from pipeline.fetch.params import DownloadSettings, FetchParams
from pipeline.fetch.sources import CIFAR10_SHA256, Cifar10Params, MnistParams, cifar10, mnist
from tests.conftest import run_cli
from tests.httpserver import FileServer
from tests.seed_standins import py2_pickle

FAST = FetchParams(download=DownloadSettings(retries=0, backoff=0.0, connect_timeout=2.0, read_timeout=2.0))


def idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, gzipped: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def fake_mnist(n_train: int = 30, n_test: int = 12) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    return {name: idx(array) for name, array in arrays.items()}, arrays


def pins(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


# --- mnist -----------------------------------------------------------------------------------------


def test_mnist_class_folders_with_fixed_splits(tmp_path):
    files, arrays = fake_mnist()
    with FileServer({f"/mnist/{name}": data for name, data in files.items()}) as server:
        out = tmp_path / "raw" / "mnist"
        result = mnist.fetch(out, MnistParams(url=server.url("/mnist"), sha256=pins(files)), FAST)
    assert result.counts == {"success": 42} and result.classes == [str(d) for d in range(10)]
    frame = manifest(out)
    assert (frame["split"] == "train").sum() == 30 and (frame["split"] == "val").sum() == 12
    for split, images_file, labels_file in mnist.FILES:
        stem = "train" if split == "train" else "val"
        for i, (image, label) in enumerate(zip(arrays[images_file], arrays[labels_file])):
            path = out / str(label) / f"{stem}-{i:05d}.png"
            assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), image), "lossless, grayscale, 28x28"
            row = frame[frame["path"] == f"{label}/{stem}-{i:05d}.png"].iloc[0]
            assert row["class"] == str(label) and row["split"] == split and row["origin"] == f"{images_file}#{i}"
    assert sorted(p.name for p in (tmp_path / "raw" / "downloads").iterdir()) == sorted(files)


def test_mnist_default_pins_are_the_published_files(tmp_path):
    """Our fake files are not MNIST: the built-in SHA-256s reject them, with a clear message."""
    files, _ = fake_mnist()
    with FileServer({f"/{name}": data for name, data in files.items()}) as server:
        with pytest.raises(
            DownloadError,
            match="SHA-256 mismatch: expected 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ):
            mnist.fetch(tmp_path / "out", MnistParams(url=server.url("/")), FAST)
    assert (tmp_path / "downloads" / "train-images-idx3-ubyte.gz.part").read_bytes() == files[
        "train-images-idx3-ubyte.gz"
    ]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("train-images-idx3-ubyte.gz", b"not gzip", "not a gzip file"),
        ("train-images-idx3-ubyte.gz", idx(np.zeros((3, 28), np.uint8)), "not an IDX file"),
        (
            "train-images-idx3-ubyte.gz",
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 28, 28) + bytes(10)),
            "IDX header says",
        ),
        ("train-labels-idx1-ubyte.gz", idx(np.arange(29, dtype=np.uint8) % 10), "29 labels for 30 images"),
        ("train-labels-idx1-ubyte.gz", idx(np.full(30, 10, np.uint8)), "label 10 is not one of 0..9"),
    ],
)
def test_mnist_malformed_files(tmp_path, name, data, message):
    files, _ = fake_mnist()
    files[name] = data
    with FileServer({f"/{n}": d for n, d in files.items()}) as server:
        with pytest.raises(InputError, match=message):
            mnist.fetch(tmp_path / "out", MnistParams(url=server.url("/"), sha256={}), FAST)


def test_mnist_cli_then_prepare_28x28_grayscale(tiny_project):
    files, arrays = fake_mnist()
    with FileServer({f"/m/{name}": data for name, data in files.items()}) as server:
        run_cli(
            "-S",
            f"fetch.mnist.sha256={json.dumps(pins(files))}",
            "fetch",
            "--source",
            "mnist",
            "--url",
            server.url("/m/"),
            "--out",
            "data/raw/mnist",
            cwd=tiny_project,
        )
    run_cli(
        "prepare",
        "--in",
        "data/raw/mnist",
        "--out",
        "prepared",
        "--size",
        "28x28",
        "--color",
        "grayscale",
        cwd=tiny_project,
    )
    prepared = tiny_project / "prepared"
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["input_shape"] == [28, 28, 1] and meta["classes"] == [str(d) for d in range(10)]
    assert meta["splits"] == {"train": 30, "val": 12}, "MNIST's own train/test split, not a random draw"
    index = pd.read_csv(prepared / "index.csv", dtype={"class": str})
    for split, images_file, labels_file in mnist.FILES:
        x, y = np.load(prepared / f"{split}_x.npy"), np.load(prepared / f"{split}_y.npy")
        rows = index[index["split"] == split].sort_values("row")
        for row, path in zip(rows["row"], rows["path"]):
            i = int(path.rsplit("-", 1)[1].removesuffix(".png"))
            assert np.array_equal(x[row, ..., 0], arrays[images_file][i]) and y[row] == arrays[labels_file][i]


# --- cifar10 ---------------------------------------------------------------------------------------


def cifar_batch(n: int, seed: int, label: str) -> tuple[np.ndarray, list[int], bytes]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane per row
    pickled = py2_pickle(
        {"batch_label": label, "labels": labels, "data": data, "filenames": [f"img_{seed}_{i}.png" for i in range(n)]}
    )
    return images, labels, pickled


def fake_cifar(
    path: Path, n: int = 3, extra: dict[str, bytes] | None = None
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-python.tar.gz with the real member names; batches in a shuffled order, as in the real tarball."""
    batches = {}
    members = {
        "cifar-10-batches-py/batches.meta": py2_pickle(
            {"label_names": cifar10.CLASSES, "num_cases_per_batch": n, "num_vis": 3072}
        )
    }
    for seed, name in enumerate(
        ["data_batch_4", "test_batch", "data_batch_1", "data_batch_3", "data_batch_2", "data_batch_5"]
    ):
        images, labels, members[f"cifar-10-batches-py/{name}"] = cifar_batch(n, seed, f"batch {name}")
        batches[name] = (images, labels)
    members["cifar-10-batches-py/readme.html"] = b"<html>see the website</html>"
    members |= extra or {}
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return batches


def test_cifar10_class_folders_with_fixed_splits(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    batches = fake_cifar(archive)
    data = archive.read_bytes()
    with FileServer({"/kriz/cifar-10-python.tar.gz": data}) as server:
        out = tmp_path / "raw" / "cifar10"
        params = Cifar10Params(url=server.url("/kriz/"), sha256=hashlib.sha256(data).hexdigest())
        result = cifar10.fetch(out, params, FAST)
    assert result.counts == {"success": 18} and result.classes == cifar10.CLASSES
    frame = manifest(out)
    assert (frame["split"] == "train").sum() == 15 and (frame["split"] == "val").sum() == 3
    for name, (images, labels) in batches.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            rel = f"{cifar10.CLASSES[label]}/{name}-{i:05d}.png"
            stored = cv2.cvtColor(cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
            assert np.array_equal(stored, image), "lossless RGB, in the right channel order"
            row = frame[frame["path"] == rel].iloc[0]
            assert (
                row["split"] == ("val" if name == "test_batch" else "train") and row["class"] == cifar10.CLASSES[label]
            )


def test_cifar10_default_pin_is_the_published_tarball(tmp_path):
    archive = tmp_path / "c.tar.gz"
    fake_cifar(archive)
    with FileServer({"/cifar-10-python.tar.gz": archive.read_bytes()}) as server:
        with pytest.raises(DownloadError, match=f"SHA-256 mismatch: expected {CIFAR10_SHA256}"):
            cifar10.fetch(tmp_path / "out", Cifar10Params(url=server.url("/cifar-10-python.tar.gz")), FAST)


def serve_and_fetch(tmp_path: Path, archive: Path, **params) -> None:
    shutil.rmtree(tmp_path / "downloads", ignore_errors=True)  # unpinned, a cached tarball would be used again
    with FileServer({"/c.tar.gz": archive.read_bytes()}) as server:
        cifar10.fetch(tmp_path / "out", Cifar10Params(url=server.url("/c.tar.gz"), sha256="", **params), FAST)


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    archive = tmp_path / "c.tar.gz"
    fake_cifar(archive, extra={"cifar-10-batches-py/data_batch_1": pickle.dumps({b"data": Evil()}, protocol=2)})
    with pytest.raises(InputError, match="refusing to load global __builtin__.print"):
        serve_and_fetch(tmp_path, archive)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"cifar-10-batches-py/batches.meta": py2_pickle({"label_names": ["a"] * 10})}, "are not CIFAR-10's"),
        (
            {"cifar-10-batches-py/test_batch": py2_pickle({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]})},
            "expected N x 3072",
        ),
        ({"cifar-10-batches-py/test_batch": py2_pickle({"labels": [0]})}, "not a CIFAR-10 batch"),
    ],
)
def test_cifar10_malformed_batches(tmp_path, extra, message):
    archive = tmp_path / "c.tar.gz"
    fake_cifar(archive, extra=extra)
    with pytest.raises(InputError, match=message):
        serve_and_fetch(tmp_path, archive)


def test_cifar10_missing_batch_and_caps(tmp_path):
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        data = cifar_batch(2, 0, "x")[2]
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(InputError, match="missing batches.meta, data_batch_2"):
        serve_and_fetch(tmp_path, archive)
    fake_cifar(archive)
    with pytest.raises(InputError, match="too large"):
        serve_and_fetch(tmp_path, archive, max_member_bytes=1000)
    with pytest.raises(InputError, match="max_total_bytes"):
        serve_and_fetch(tmp_path, archive, max_total_bytes=20_000)


def test_cifar10_cli_then_prepare(tiny_project):
    archive = tiny_project / "c.tar.gz"
    fake_cifar(archive, n=2)
    with FileServer({"/cifar-10-python.tar.gz": archive.read_bytes()}) as server:
        run_cli(
            "-S",
            "fetch.cifar10.sha256=",
            "fetch",
            "--source",
            "cifar10",
            "--url",
            server.url("/"),
            "--out",
            "c10",
            cwd=tiny_project,
        )
    run_cli("prepare", "--in", "c10", "--out", "prepared", "--size", "32x32", cwd=tiny_project)
    meta = json.loads((tiny_project / "prepared" / "meta.json").read_text())
    assert (
        meta["input_shape"] == [32, 32, 3]
        and meta["classes"] == cifar10.CLASSES
        and meta["splits"] == {"train": 10, "val": 2}
    )
