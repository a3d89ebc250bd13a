"""Our shards are standard webdataset shards: a webdataset user trains from them with the
`webdataset` library alone (`jpg`, `cls`), filters a split from each sample's JSON, and gets the
labels of dataset.json; no join with our manifest."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.dataset import read_manifest
from tests.conftest import run_cli
from tests.scripted import ALLOW_LOOPBACK, jpeg

A, B = "n00000001", "n00000002"


def _url_list(server, tmp_path: Path) -> None:
    """Two classes of 12 JPEGs of a few sizes; B first lists one of A's images (a duplicate across
    classes: A owns it, settled after the fetch)."""
    lines = []
    for k, cls in enumerate((A, B)):
        if k:
            lines.append(f"{B}_x\t{server.url}/{A}/0.jpg\n")
        for i in range(12):
            url = server.file(f"/{cls}/{i}.jpg", jpeg(100 * k + i, (24 + i % 3 * 8, 32)))
            lines.append(f"{cls}_{i}\t{url}\n")
    (tmp_path / "urls.txt").write_text("".join(lines))


def _fetch(tmp_path: Path, per_class: int, val: int) -> Path:
    run_cli(*ALLOW_LOOPBACK, "-S", "fetch.shard_size=5", "fetch", "--source", "imagenet", "--url-list", "urls.txt",
            "--wnids", f"{A},{B}", "--per-class", str(per_class), "--val-per-class", str(val), "--layout", "shards",
            "--out", "ds", cwd=tmp_path)  # fmt: skip
    return tmp_path / "ds"


def test_a_webdataset_user_trains_from_our_shards_with_the_library_alone(server, tmp_path):
    import cv2
    import keras
    import webdataset as wds

    _url_list(server, tmp_path)
    root = _fetch(tmp_path, 8, 3)
    classes = json.loads((root / "dataset.json").read_text())["classes"]
    tars = sorted(str(p) for p in (root / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("rgb8"))
    assert {"jpg", "cls", "json"} <= set(samples[0])

    def split(name: str) -> tuple[np.ndarray, np.ndarray, list]:
        chosen = [s for s in samples if s["json"]["split"] == name]
        x = np.stack([cv2.resize(s["jpg"], (16, 16)) for s in chosen]).astype("float32") / 255
        return x, np.array([s["cls"] for s in chosen]), [s["json"] for s in chosen]

    x, y, metas = split("train")
    x_val, y_val, _ = split("val")
    # the labels of dataset.json, and the manifest's decisions, from the shards alone
    manifest = read_manifest(root)
    ok = manifest[manifest.status == "success"]
    assert [classes[label] for label in y] == [m["class"] for m in metas]
    assert sorted(m["url"] for m in metas) == sorted(ok.url[ok.split == "train"])
    assert (len(y), len(y_val)) == (16, 6) and set(y) == {0, 1}
    dups = [s["json"] for s in samples if s["json"]["status"] == "duplicate"]
    assert [d["class"] for d in dups] == [B] and dups[0]["split"] == ""
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("linked", [False, True])
def test_a_new_split_is_written_into_the_fetched_tars_without_touching_a_linked_copy(server, tmp_path, linked):
    """Settling rewrites each sample's JSON in place (same size: the shard stays finished, nothing is
    fetched again); a tar with another link (a DVC cache's) is copied first and the link is kept."""
    _url_list(server, tmp_path)
    root = _fetch(tmp_path, 8, 3)
    tar = root / "shards" / "00001.tar"  # A's 6th to 10th URL: the 9th is train at 9 a class, val at 8
    before, inode = tar.read_bytes(), tar.stat().st_ino
    if linked:
        os.link(tar, tmp_path / "cache-link")
    hits = dict(server.hits)
    _fetch(tmp_path, 8, 3)  # the same decisions: nothing is written
    assert tar.read_bytes() == before and tar.stat().st_ino == inode
    _fetch(tmp_path, 9, 2)  # the same URLs, another split
    assert server.hits == hits  # nothing fetched again
    assert tar.stat().st_size == len(before) and tar.read_bytes() != before
    assert (tar.stat().st_ino == inode) is not linked
    if linked:
        assert (tmp_path / "cache-link").read_bytes() == before
    manifest = read_manifest(root)
    with tarfile.open(tar) as opened:
        for info in opened:
            if info.name.endswith(".json"):
                meta = json.loads(opened.extractfile(info).read())
                row = manifest[(manifest.url == meta["url"]) & (manifest["class"] == meta["class"])].iloc[0]
                assert meta["split"] == row.split
    assert manifest[manifest.status == "success"].groupby("split").size().to_dict() == {"train": 18, "val": 4}


def test_our_shards_import_back_with_the_webdataset_source(server, tmp_path):
    """`--source webdataset --path <glob>` over our own tars, the class from each sample's JSON or cls:
    the same images under the same classes as the fetch stored (duplicates stored once)."""
    _url_list(server, tmp_path)
    root = _fetch(tmp_path, 8, 3)
    fetched = read_manifest(root)
    ok = fetched[fetched.status == "success"]
    for label, out in (("json:class", "by-json"), ("cls", "by-cls")):  # cls: named by ds/dataset.json
        run_cli("-S", f"fetch.webdataset.label={label}", "fetch", "--source", "webdataset", "--path",
                "ds/shards/*.tar", "--out", out, cwd=tmp_path)  # fmt: skip
        imported = read_manifest(tmp_path / out)
        got = imported[imported.status == "success"]
        assert sorted(zip(got["class"], got.sha256)) == sorted(zip(ok["class"], ok.sha256))
        assert (imported.status == "duplicate").sum() == (fetched.status == "duplicate").sum() == 1
