"""pipeline.prepare.prepare on plain class folders and on the synthetic source, and the synthetic source itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.dataset import COLUMNS
from pipeline.core.errors import ConfigError, DataError, InputError
from pipeline.core.images import load, probe
from pipeline.fetch.sources import SyntheticParams
from pipeline.fetch.sources.synthetic import CLASSES, fetch
from pipeline.prepare.params import PrepareParams
from pipeline.prepare.prepare import _allocate, auto_size, prepare
from pipeline.prepare.survey import survey_shapes, write_survey

SMALL = (20, 30)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_folder(root: Path, counts: dict[str, int], shape=(40, 60)) -> Path:
    """One subfolder per class; every image a different flat colour so arrays can be traced to files."""
    rng = np.random.default_rng(123)
    for cls, n in counts.items():  # created in the given (non-alphabetical) order on purpose
        (root / cls).mkdir(parents=True)
        for i in range(n):
            colour = rng.integers(0, 256, 3).astype(np.uint8)
            Image.fromarray(np.broadcast_to(colour, (*shape, 3)).copy()).save(root / cls / f"{i:03d}.png")
    return root


def read_outputs(out: Path) -> dict:
    return {
        "meta": json.loads((out / "meta.json").read_text()),
        "index": pd.read_csv(out / "index.csv", keep_default_na=False),
        "skipped": pd.read_csv(out / "skipped.csv", keep_default_na=False),
        **{f"{split}_{k}": np.load(out / f"{split}_{k}.npy") for split in ("train", "val") for k in ("x", "y")},
    }


def split_paths(out: Path) -> dict[str, list[str]]:
    index = pd.read_csv(out / "index.csv")
    return {split: sorted(index[index["split"] == split]["path"]) for split in ("train", "val")}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    fetch(root, SyntheticParams(per_class=10, seed=0))
    return root


@pytest.fixture
def plain(tmp_path) -> Path:
    return make_folder(tmp_path / "raw", {"zebra": 8, "apple": 16})


# --- plain folders -------------------------------------------------------------------------------


def test_plain_folder_arrays_and_labels(plain, tmp_path):
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL, train_size=0.75, val_size=0.25))
    assert result.classes == ["apple", "zebra"]  # alphabetical, not creation order
    assert result.input_shape == (*SMALL, 3)
    assert result.sizes == {"train": 18, "val": 6}
    assert result.skipped == []
    o = read_outputs(tmp_path / "out")
    assert o["train_x"].shape == (18, *SMALL, 3) and o["val_x"].shape == (6, *SMALL, 3)
    assert o["train_x"].dtype == np.uint8 and o["val_x"].dtype == np.uint8
    assert o["train_y"].shape == (18,) and o["train_y"].dtype == np.int32
    assert o["val_y"].dtype == np.int32
    assert sorted(set(o["train_y"].tolist())) == [0, 1]
    index = o["index"]
    assert list(index.columns) == ["split", "row", "path", "class", "label"]
    for row in index.rename(columns={"class": "cls"}).itertuples():
        assert row.label == result.classes.index(row.cls)
        assert row.path.startswith(f"{row.cls}/")


def test_index_rows_map_back_to_files(plain, tmp_path):
    cfg = PrepareParams(size=SMALL, train_size=0.5, val_size=0.5)
    prepare(plain, tmp_path / "out", cfg)
    o = read_outputs(tmp_path / "out")
    index = o["index"]
    assert len(index) == 24 and index["path"].is_unique
    assert set(index["path"]) == {p.relative_to(plain).as_posix() for p in plain.rglob("*.png")}
    for split in ("train", "val"):
        rows = index[index["split"] == split]
        assert rows["row"].tolist() == list(range(len(rows)))
        for row in rows.itertuples():
            expected = load((plain / row.path).read_bytes(), SMALL)
            np.testing.assert_array_equal(o[f"{split}_x"][row.row], expected)
            assert o[f"{split}_y"][row.row] == row.label


def test_plain_meta(plain, tmp_path):
    prepare(
        plain, tmp_path / "out", PrepareParams(size=SMALL, aspect="pad", color="grayscale", train_size=12, val_size=6)
    )
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["classes"] == ["apple", "zebra"]
    assert meta["input_shape"] == [*SMALL, 1]
    assert meta["splits"] == {"train": 12, "val": 6}
    assert meta["aspect"] == "pad" and meta["color"] == "grayscale"
    assert meta["skipped"] == 0
    assert len(meta["manifest_sha256"]) == 64
    # the listing hash follows the folder's content
    (plain / "zebra" / "999.png").write_bytes((plain / "zebra" / "000.png").read_bytes())
    prepare(plain, tmp_path / "out2", PrepareParams(size=SMALL, train_size=12, val_size=6))
    assert json.loads((tmp_path / "out2" / "meta.json").read_text())["manifest_sha256"] != meta["manifest_sha256"]


def test_grayscale_gives_one_channel(plain, tmp_path):
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL, color="grayscale"))
    assert result.input_shape == (*SMALL, 1)
    x = np.load(tmp_path / "out" / "train_x.npy")
    assert x.shape[1:] == (*SMALL, 1) and x.dtype == np.uint8


# --- splits ------------------------------------------------------------------------------------


def per_class(out: Path, split: str) -> dict[str, int]:
    index = pd.read_csv(out / "index.csv")
    return index[index["split"] == split]["class"].value_counts().to_dict()


def test_stratified_split_by_fractions(plain, tmp_path):
    # 16 apple + 8 zebra; train 0.5 -> 12 (8 + 4), val 0.25 -> 6 (4 + 2), 6 left out
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL, train_size=0.5, val_size=0.25))
    assert result.sizes == {"train": 12, "val": 6}
    assert per_class(tmp_path / "out", "train") == {"apple": 8, "zebra": 4}
    assert per_class(tmp_path / "out", "val") == {"apple": 4, "zebra": 2}
    paths = split_paths(tmp_path / "out")
    assert not set(paths["train"]) & set(paths["val"])


def test_stratified_split_by_counts(plain, tmp_path):
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL, train_size=9, val_size=6))
    assert result.sizes == {"train": 9, "val": 6}
    assert np.load(tmp_path / "out" / "train_y.npy").shape == (9,)
    assert np.load(tmp_path / "out" / "val_x.npy").shape[0] == 6
    assert per_class(tmp_path / "out", "train") == {"apple": 6, "zebra": 3}
    assert per_class(tmp_path / "out", "val") == {"apple": 4, "zebra": 2}


def test_split_sizes_exact_with_remainders(tmp_path):
    root = make_folder(tmp_path / "raw", {"a": 7, "b": 5, "c": 3})  # 15 images
    result = prepare(root, tmp_path / "out", PrepareParams(size=SMALL, train_size=10, val_size=4))
    assert result.sizes == {"train": 10, "val": 4}
    train = per_class(tmp_path / "out", "train")
    assert sum(train.values()) == 10
    for cls, n in {"a": 7, "b": 5, "c": 3}.items():  # largest remainder: within one of proportional
        assert abs(train.get(cls, 0) - 10 * n / 15) < 1


def test_split_deterministic_for_seed(plain, tmp_path):
    cfg = PrepareParams(size=SMALL, train_size=0.5, val_size=0.25, seed=4)
    prepare(plain, tmp_path / "a", cfg)
    prepare(plain, tmp_path / "b", cfg)
    prepare(plain, tmp_path / "c", PrepareParams(size=SMALL, train_size=0.5, val_size=0.25, seed=5))
    assert (tmp_path / "a" / "index.csv").read_bytes() == (tmp_path / "b" / "index.csv").read_bytes()
    assert split_paths(tmp_path / "a") != split_paths(tmp_path / "c")
    assert per_class(tmp_path / "c", "train") == {"apple": 8, "zebra": 4}  # still stratified


@pytest.mark.parametrize(
    "total, weights, caps, expected",
    [
        (3, [4, 2, 4], [9, 9, 9], [1, 1, 1]),  # exact 1.2, 0.6, 1.2: the largest remainder (0.6) gets the last one
        (10, [7, 7, 6], [9, 9, 9], [4, 3, 3]),  # equal remainders: the first class
        (4, [1, 1, 1, 1, 4], [9, 9, 9, 9, 9], [1, 1, 0, 0, 2]),  # 0.5 each and 2.0: equal remainders go in class order
        (6, [1, 5], [1, 2], [1, 2]),  # caps win: no class gets more than it has
        (3, [1, 1], [0, 5], [0, 3]),  # a class at its cap passes its share on
    ],
)
def test_allocate_by_largest_remainder(total, weights, caps, expected):
    assert _allocate(total, weights, caps) == expected


def test_too_many_requested(plain, tmp_path):
    with pytest.raises(ConfigError, match="only 24 are usable"):
        prepare(plain, tmp_path / "out", PrepareParams(size=SMALL, train_size=20, val_size=5))
    with pytest.raises(ConfigError):
        prepare(plain, tmp_path / "out2", PrepareParams(size=SMALL, train_size=30, val_size=0.1))


def test_fractions_summing_to_one_with_odd_count(tmp_path):
    root = make_folder(tmp_path / "raw", {"a": 3, "b": 2})  # 5 images; config allows 0.5 + 0.5 = 1
    result = prepare(root, tmp_path / "out", PrepareParams(size=SMALL, train_size=0.5, val_size=0.5))
    assert result.sizes["train"] + result.sizes["val"] == 5


# --- size ----------------------------------------------------------------------------------------


def test_auto_size_rounds_half_up():
    assert auto_size([375, 500], 0.25) == (94, 125)
    assert auto_size([375, 500], 0.125) == (47, 63)  # 46.875 -> 47, 62.5 -> 63
    assert auto_size([3, 5], 0.01) == (1, 1)
    with pytest.raises(InputError):
        auto_size([], 0.25)


def test_explicit_size_vs_auto(synthetic, tmp_path):
    auto = prepare(synthetic, tmp_path / "auto", PrepareParams(scale=0.25))
    assert auto.input_shape == (94, 125, 3)
    assert np.load(tmp_path / "auto" / "train_x.npy").shape[1:] == (94, 125, 3)
    explicit = prepare(synthetic, tmp_path / "explicit", PrepareParams(size=(24, 32), scale=0.25))
    assert explicit.input_shape == (24, 32, 3)
    assert np.load(tmp_path / "explicit" / "val_x.npy").shape[1:] == (24, 32, 3)


def test_auto_size_from_plain_folder(tmp_path):
    root = make_folder(tmp_path / "raw", {"a": 3})
    make_folder(root, {"b": 2}, shape=(80, 80))
    result = prepare(root, tmp_path / "out", PrepareParams(scale=0.5, train_size=3, val_size=2))
    assert result.input_shape == (20, 30, 3)  # most common shape 40x60 (3 of 5), halved


def test_auto_size_from_survey_json(synthetic, tmp_path):
    survey = tmp_path / "survey.json"
    write_survey(survey_shapes(synthetic), survey)
    fake = tmp_path / "fake.json"
    fake.write_text(json.dumps({"most_common_shape": [100, 60]}))
    assert prepare(synthetic, tmp_path / "a", PrepareParams(scale=0.25), survey_json=survey).input_shape == (94, 125, 3)
    assert prepare(synthetic, tmp_path / "b", PrepareParams(scale=0.25), survey_json=fake).input_shape == (25, 15, 3)
    with pytest.raises(InputError):
        prepare(synthetic, tmp_path / "c", PrepareParams(scale=0.25), survey_json=tmp_path / "absent.json")


# --- bad files -----------------------------------------------------------------------------------


def test_corrupt_and_empty_files_skipped(plain, tmp_path):
    (plain / "apple" / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(700))
    (plain / "zebra" / "empty.jpg").write_bytes(b"")
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL, train_size=0.75, val_size=0.25))
    assert result.sizes == {"train": 18, "val": 6}  # all 24 valid images kept
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", keep_default_na=False)
    assert list(skipped.columns) == ["path", "reason"]
    assert sorted(skipped["path"]) == ["apple/corrupt.jpg", "zebra/empty.jpg"]
    assert all(reason.strip() for reason in skipped["reason"])
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert len(index) == 24
    assert not {"apple/corrupt.jpg", "zebra/empty.jpg"} & set(index["path"])
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["skipped"] == 2


def test_image_that_fails_to_decode_after_probe(plain, tmp_path):
    """A JPEG with an intact header but truncated data passes the probe and fails the decode."""
    noise = (np.random.default_rng(1).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(plain / "apple" / "full.jpg", quality=95)
    data = (plain / "apple" / "full.jpg").read_bytes()
    (plain / "apple" / "full.jpg").unlink()
    (plain / "apple" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    assert probe(plain / "apple" / "truncated.jpg") == (40, 60)
    cfg = PrepareParams(size=SMALL, train_size=20, val_size=5)
    result = prepare(plain, tmp_path / "out", cfg)
    assert [path for path, _ in result.skipped] == ["apple/truncated.jpg"]
    assert result.sizes["train"] + result.sizes["val"] == 24
    o = read_outputs(tmp_path / "out")
    for split in ("train", "val"):  # arrays, labels and index stay aligned after the failed row is dropped
        rows = o["index"][o["index"]["split"] == split]
        assert len(rows) == len(o[f"{split}_x"]) == len(o[f"{split}_y"]) == result.sizes[split]
        for row in rows.itertuples():
            np.testing.assert_array_equal(o[f"{split}_x"][row.row], load((plain / row.path).read_bytes(), SMALL))
            assert o[f"{split}_y"][row.row] == row.label
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        prepare(tmp_path / "nope", tmp_path / "out", PrepareParams(size=SMALL))


def test_folder_without_classes(tmp_path):
    (tmp_path / "raw").mkdir()
    Image.new("RGB", (6, 4)).save(tmp_path / "raw" / "loose.png")
    with pytest.raises(InputError, match="no class subfolders"):
        prepare(tmp_path / "raw", tmp_path / "out", PrepareParams(size=SMALL))


def test_no_readable_images(tmp_path):
    for cls in "ab":
        (tmp_path / "raw" / cls).mkdir(parents=True)
        (tmp_path / "raw" / cls / "x.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"no usable image .*\(2 skipped: 2 not an image\)"):
        prepare(tmp_path / "raw", tmp_path / "out", PrepareParams(size=SMALL))
    assert not (tmp_path / "out").exists()


def test_two_runs_byte_identical(plain, tmp_path):
    cfg = PrepareParams(size=SMALL, train_size=0.5, val_size=0.5, seed=2)
    prepare(plain, tmp_path / "a", cfg)
    prepare(plain, tmp_path / "b", cfg)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"train_x.npy", "train_y.npy", "val_x.npy", "val_y.npy", "index.csv", "skipped.csv", "meta.json"} <= set(
        names
    )
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# --- prepare on the synthetic source -------------------------------------------------------------


def test_synthetic_prepare(synthetic, tmp_path):
    result = prepare(synthetic, tmp_path / "out", PrepareParams(size=SMALL, train_size=0.8, val_size=0.2))
    assert result.classes == ["vertical", "horizontal"]  # declared order, not alphabetical
    assert result.sizes == {"train": 16, "val": 4}
    o = read_outputs(tmp_path / "out")
    assert o["meta"]["classes"] == ["vertical", "horizontal"]
    assert o["meta"]["input_shape"] == [*SMALL, 3]
    assert o["meta"]["splits"] == {"train": 16, "val": 4}
    assert o["meta"]["manifest_sha256"] == sha256(synthetic / "manifest.csv")
    assert o["train_x"].shape == (16, *SMALL, 3) and o["val_x"].shape == (4, *SMALL, 3)
    index = o["index"]
    assert set(index[index["class"] == "vertical"]["label"]) == {0}
    assert set(index[index["class"] == "horizontal"]["label"]) == {1}
    assert per_class(tmp_path / "out", "train") == {"vertical": 8, "horizontal": 8}
    assert per_class(tmp_path / "out", "val") == {"vertical": 2, "horizontal": 2}
    for split in ("train", "val"):
        rows = index[index["split"] == split].rename(columns={"class": "cls"})
        for row in rows.itertuples():
            assert row.path.startswith(f"{row.cls}/")
            np.testing.assert_array_equal(o[f"{split}_x"][row.row], load((synthetic / row.path).read_bytes(), SMALL))
            assert o[f"{split}_y"][row.row] == row.label


def test_synthetic_prepare_ignores_non_ok_rows(synthetic, tmp_path):
    root = tmp_path / "copy"
    manifest = pd.read_csv(synthetic / "manifest.csv", keep_default_na=False)
    for path in manifest["path"]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes((synthetic / path).read_bytes())
    (root / "dataset.json").write_bytes((synthetic / "dataset.json").read_bytes())
    manifest.loc[manifest["path"] == "vertical/00000.jpg", ["status", "error_message"]] = [
        "duplicate",
        "same as vertical/00001.jpg",
    ]
    manifest.to_csv(root / "manifest.csv", index=False, lineterminator="\n")
    result = prepare(root, tmp_path / "out", PrepareParams(size=SMALL, train_size=15, val_size=4))
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert "vertical/00000.jpg" not in set(index["path"])
    assert result.sizes == {"train": 15, "val": 4}


# --- the synthetic source ------------------------------------------------------------------------


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_byte_identical_for_same_seed(synthetic, tmp_path):
    again = tmp_path / "again"
    result = fetch(again, SyntheticParams(per_class=10, seed=0))
    assert result.classes == CLASSES
    assert result.counts == {"success": 20}
    assert (again / "manifest.csv").read_bytes() == (synthetic / "manifest.csv").read_bytes()
    assert file_hashes(again) == file_hashes(synthetic)


def test_synthetic_different_seed_differs(synthetic, tmp_path):
    other = tmp_path / "other"
    fetch(other, SyntheticParams(per_class=10, seed=1))
    assert (other / "manifest.csv").read_bytes() != (synthetic / "manifest.csv").read_bytes()
    a, b = file_hashes(synthetic), file_hashes(other)
    assert set(a) == set(b)  # same file names ...
    images = [name for name in a if name.endswith(".jpg")]
    assert all(a[name] != b[name] for name in images)  # ... different content


def test_synthetic_manifest(synthetic):
    manifest = pd.read_csv(synthetic / "manifest.csv", keep_default_na=False)
    assert list(manifest.columns) == COLUMNS
    assert {
        "url",
        "key",
        "path",
        "class",
        "split",
        "status",
        "error_message",
        "http_status",
        "bytes",
        "sha256",
        "dhash",
        "width",
        "height",
        "format",
        "elapsed_ms",
    } == set(COLUMNS)
    assert len(manifest) == 20 and manifest["path"].is_unique
    assert manifest["path"].tolist() == sorted(manifest["path"])  # sorted by class, then path
    assert set(manifest["format"]) == {"JPEG"}
    assert set(manifest["status"]) == {"success"}
    assert set(manifest["error_message"]) == {""} and set(manifest["split"]) == {""}
    assert manifest["class"].value_counts().to_dict() == {"vertical": 10, "horizontal": 10}
    images = sorted(p.relative_to(synthetic).as_posix() for p in synthetic.rglob("*.jpg"))
    assert sorted(manifest["path"]) == images
    for row in manifest.rename(columns={"class": "cls"}).itertuples():
        path = synthetic / row.path
        assert row.path.split("/")[0] == row.cls
        assert row.bytes == path.stat().st_size
        assert row.sha256 == sha256(path)
        assert probe(path) == (row.height, row.width)
    assert json.loads((synthetic / "dataset.json").read_text()) == {
        "source": "synthetic",
        "classes": ["vertical", "horizontal"],
    }


def test_synthetic_size_distribution(tmp_path):
    fetch(tmp_path / "s", SyntheticParams(per_class=20, seed=0))
    survey = survey_shapes(tmp_path / "s")
    assert survey.images == 40 and survey.unreadable == 0
    assert survey.most_common_shape == [375, 500]
    counts = {(s["height"], s["width"]): s["count"] for s in survey.shapes}
    assert counts[(375, 500)] > 40 / 3  # about 60% in expectation
    assert all(150 <= h <= 500 and 200 <= w <= 500 for h, w in counts if (h, w) != (500, 375))
