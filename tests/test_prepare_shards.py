"""survey-shapes and prepare over a shard-layout dataset (webdataset tars + parquet manifests), on
the local process pool and on a Dask LocalCluster; the engine itself; the shard-layout readers."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.dataset import iter_shard_images, layout, read_final_manifest, shard_names, stored_items
from pipeline.core.errors import ConfigError, ImageError, InputError
from pipeline.core.prepared import ShardedRows, fingerprint, load_split, read_meta
from pipeline.params import load_section
from pipeline.prepare.params import PrepareParams
from pipeline.prepare.prepare import prepare
from pipeline.prepare.survey import survey_shapes
from tests.conftest import run_cli
from tests.shards import Sample, mark_incomplete, tiny_samples, write_folder_dataset, write_shard_dataset

SIZE = (12, 16)
N, PER_SHARD = 300, 80  # 4 shards: 80, 80, 80, 60


def rows_by_bytes(x: np.ndarray, y: np.ndarray) -> list[tuple[bytes, int]]:
    """The (image, label) rows of a split as a sorted list: the same images whatever their order."""
    x = np.asarray(x)
    return sorted((bytes(x[i]), int(y[i])) for i in range(len(x)))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """The same 300 images as a shard dataset and as a folder dataset, each prepared on the local
    engine."""
    root = tmp_path_factory.mktemp("shards")
    samples = tiny_samples(N)
    sharded = write_shard_dataset(root / "sharded", samples, PER_SHARD)
    folder = write_folder_dataset(root / "folder", samples)
    prepare(sharded, root / "out-local", PrepareParams(size=SIZE))
    prepare(folder, root / "out-folder", PrepareParams(size=SIZE))
    return {
        "sharded": sharded,
        "folder": folder,
        "local": root / "out-local",
        "classic": root / "out-folder",
    }


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the shard-layout readers -----------------------------------------------------------------------


def test_readers_of_the_shard_layout(datasets):
    root = datasets["sharded"]
    assert layout(root) == "shards" and layout(datasets["folder"]) == "folder"
    assert shard_names(root) == ["00000", "00001", "00002", "00003"]
    manifest = read_final_manifest(root)
    assert len(manifest) == N and set(manifest["status"]) == {"success"}
    items, bad = stored_items(root)
    assert bad == [] and items["shard"].tolist()[:2] == ["00000", "00000"] and items["member"][0] == "000000000.png"
    members = list(iter_shard_images(root, "00003", 10_000_000))
    assert [name for name, _ in members][:2] == ["000030000.png", "000030000.json"] and len(members) == 2 * (
        N - 3 * PER_SHARD
    )
    wanted = list(iter_shard_images(root, "00003", 10_000_000, {"000030001.jpg"}))
    assert [name for name, _ in wanted] == ["000030001.jpg"] and wanted[0][1][:3] == b"\xff\xd8\xff"
    capped = dict(iter_shard_images(root, "00003", 100, {"000030001.jpg"}))
    assert isinstance(capped["000030001.jpg"], ImageError) and "too large" in str(capped["000030001.jpg"])


def test_links_in_a_shard_are_never_read(tmp_path):
    root = write_shard_dataset(tmp_path / "sharded", tiny_samples(4), 10)
    with tarfile.open(root / "shards" / "00000.tar", "a") as tar:
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    names = [name for name, _ in iter_shard_images(root, "00000", 10_000_000)]
    assert names and "link.jpg" not in names


def test_a_damaged_tar_is_refused_in_one_line(tmp_path):
    root = write_shard_dataset(tmp_path / "sharded", tiny_samples(20), 10)
    tar = root / "shards" / "00001.tar"
    tar.write_bytes(tar.read_bytes()[:1500])  # cut inside a member
    with pytest.raises(InputError, match="00001.tar: damaged shard") as err:
        prepare(root, tmp_path / "out", PrepareParams(size=(8, 8)))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    tar.write_bytes(b"\xff" * 2048)  # not a tar at all
    with pytest.raises(InputError, match="00001.tar: damaged shard"):
        list(iter_shard_images(root, "00001", 10_000))


# --- prepare ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_dask(datasets) -> Path:
    """The shard dataset prepared on a Dask LocalCluster (127.0.0.1)."""
    out = datasets["local"].with_name("out-dask")
    prepare(datasets["sharded"], out, PrepareParams(size=SIZE, engine="dask"))
    return out


@pytest.mark.slow
def test_local_and_dask_engines_give_byte_identical_outputs(datasets, on_dask):
    local, dask = tree(datasets["local"]), tree(on_dask)
    assert local.keys() == dask.keys() and len(local) == 3 + 4 * 4
    assert all(local[name] == dask[name] for name in local), [name for name in local if local[name] != dask[name]]


def test_the_prepared_shards_format(datasets):
    out = datasets["local"]
    meta = read_meta(out)
    assert meta["layout"] == "shards" and meta["classes"] == ["cat", "dog"] and meta["input_shape"] == [*SIZE, 3]
    assert [s["name"] for s in meta["shards"]] == ["00000", "00001", "00002", "00003"]
    assert (
        {split: sum(s[split] for s in meta["shards"]) for split in ("train", "val")}
        == meta["splits"]
        == {"train": 226, "val": 74}
    )
    assert meta["skipped"] == 0 and meta["source"] == "test" and len(meta["manifest_sha256"]) == 64
    for shard in meta["shards"]:
        for split in ("train", "val"):
            x = np.load(out / "shards" / f"{shard['name']}-{split}_x.npy")
            y = np.load(out / "shards" / f"{shard['name']}-{split}_y.npy")
            assert (
                x.shape == (shard[split], *SIZE, 3)
                and x.dtype == np.uint8
                and y.dtype == np.int32
                and len(y) == shard[split]
            )
    x, y = load_split(out, "train")
    assert isinstance(x, ShardedRows) and len(x) == 226 and x.shape == (226, *SIZE, 3) and y.dtype == np.int32
    whole = np.concatenate([np.load(out / "shards" / f"{s['name']}-train_x.npy") for s in meta["shards"]])
    np.testing.assert_array_equal(np.asarray(x), whole)
    np.testing.assert_array_equal(
        x[[5, 100, 225, 0]], whole[[5, 100, 225, 0]]
    )  # gathered across shards, in the order asked
    np.testing.assert_array_equal(x[79:83], whole[79:83])
    np.testing.assert_array_equal(x[-1], whole[-1])
    index = pd.read_csv(out / "index.csv", keep_default_na=False)
    assert index.columns.tolist() == ["split", "row", "path", "class", "label"]
    train = index[index["split"] == "train"]
    assert train["row"].tolist() == list(range(226)) and train["label"].tolist() == y.tolist()
    assert train["path"].iloc[0] == "shards/00000.tar#000000000.png"
    assert pd.read_csv(out / "skipped.csv").columns.tolist() == ["path", "reason"]
    assert len(fingerprint(out)) == 64  # (the same on Dask: test_local_and_dask_engines_give_byte_identical_outputs)


def test_same_images_per_split_as_the_folder_layout(datasets):
    for split in ("train", "val"):
        sharded, classic = load_split(datasets["local"], split), load_split(datasets["classic"], split)
        assert rows_by_bytes(*sharded) == rows_by_bytes(*classic)


def test_drawn_split_is_the_folder_layouts_draw(tmp_path):
    """No split in the manifest: the same seeded stratified draw as over the folder layout."""
    samples = tiny_samples(60, fixed_split=False)
    write_shard_dataset(tmp_path / "sharded", samples, 25)
    write_folder_dataset(tmp_path / "folder", samples)
    cfg = PrepareParams(size=(8, 8), train_size=0.7, val_size=0.3, seed=3)
    prepare(tmp_path / "sharded", tmp_path / "a", cfg)
    prepare(tmp_path / "folder", tmp_path / "b", cfg)
    for split in ("train", "val"):
        assert rows_by_bytes(*load_split(tmp_path / "a", split)) == rows_by_bytes(*load_split(tmp_path / "b", split))
    assert read_meta(tmp_path / "a")["splits"] == {"train": 42, "val": 18}


def test_auto_size_from_the_manifest_matches_the_folder(tmp_path):
    samples = tiny_samples(40)
    write_shard_dataset(tmp_path / "sharded", samples, 15)
    write_folder_dataset(tmp_path / "folder", samples)
    a = prepare(tmp_path / "sharded", tmp_path / "a", PrepareParams(scale=0.5))
    b = prepare(tmp_path / "folder", tmp_path / "b", PrepareParams(scale=0.5))
    assert a.input_shape == b.input_shape == (12, 16, 3)


def test_broken_images_and_duplicates_in_a_tar(tmp_path):
    samples = tiny_samples(40)
    samples[5] = Sample(samples[5].cls, b"definitely not an image", "jpg", samples[5].split)
    samples[6] = Sample(
        samples[6].cls, samples[6].data[: len(samples[6].data) // 3], samples[6].ext, samples[6].split
    )  # truncated PNG
    samples.append(Sample("cat", samples[0].data, samples[0].ext, "train", status="duplicate", reason="duplicate of 0"))
    samples.append(Sample("dog", b"", "jpg", "", status="failed", reason="http 404"))
    write_shard_dataset(tmp_path / "sharded", samples, 16)
    result = prepare(tmp_path / "sharded", tmp_path / "out", PrepareParams(size=(8, 8)))
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", keep_default_na=False)
    assert skipped["path"].tolist() == ["shards/00000.tar#000000005.jpg", "shards/00000.tar#000000006.png"]
    assert skipped["reason"][0] == "not an image" and skipped["reason"][1] != ""
    assert sum(result.sizes.values()) == 38 and read_meta(tmp_path / "out")["skipped"] == 2
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert "shards/00002.tar#000020008.png" not in set(index["path"])  # the stored duplicate is not used
    x, y = load_split(tmp_path / "out", "train")
    assert len(x) == len(y) == result.sizes["train"]


def test_an_unfinished_shard_dataset_is_refused(tmp_path):
    root = write_shard_dataset(tmp_path / "sharded", tiny_samples(20), 10)
    mark_incomplete(root)
    for call in (lambda: prepare(root, tmp_path / "out", PrepareParams(size=(8, 8))), lambda: survey_shapes(root)):
        with pytest.raises(InputError, match="unfinished fetch") as err:
            call()
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_missing_shard_is_refused(tmp_path):
    root = write_shard_dataset(tmp_path / "sharded", tiny_samples(20), 10)
    (root / "shards" / "00001.tar").unlink()
    with pytest.raises(InputError, match="00001.tar is missing"):
        prepare(root, tmp_path / "out", PrepareParams(size=(8, 8)))


def test_prepare_over_shards_from_the_command_line(datasets, tmp_path):
    run_cli(
        "prepare", "--in", str(datasets["sharded"]), "--out", str(tmp_path / "out"), "--size", "12x16", cwd=tmp_path
    )
    assert tree(tmp_path / "out") == tree(datasets["local"])


# --- survey -----------------------------------------------------------------------------------------


def test_survey_over_shards_matches_the_folder(datasets):
    sharded, folder = survey_shapes(datasets["sharded"]), survey_shapes(datasets["folder"])
    assert sharded == folder and sharded.images == N and sharded.most_common_shape == [24, 32]
    sample = survey_shapes(datasets["sharded"], sample=50, seed=1)
    assert sample.images == 50 and sample == survey_shapes(datasets["sharded"], sample=50, seed=1)


# --- the engine -------------------------------------------------------------------------------------


def test_prepare_engine_params_are_validated():
    assert load_section("prepare", Path("/nonexistent"), {"prepare.engine": "dask"}).engine == "dask"
    with pytest.raises(ConfigError, match="prepare.engine"):
        load_section("prepare", Path("/nonexistent"), {"prepare.engine": "spark"})
    with pytest.raises(ConfigError, match="prepare.scheduler"):
        load_section("prepare", Path("/nonexistent"), {"prepare.scheduler": "tcp://127.0.0.1:8786"})


def test_sharded_rows_index_like_the_concatenated_array():
    import itertools

    parts = [np.arange(i * 10, i * 10 + n, dtype=np.uint8).reshape(n, 1) for i, n in enumerate([3, 0, 5, 2])]
    whole, rows = np.concatenate(parts), ShardedRows(parts, (1,))
    assert len(rows) == 10 and rows.shape == (10, 1) and rows.counts == [3, 0, 5, 2]
    for start, stop, step in itertools.product(
        [None, -3, 0, 2, 4, 9, 12], [None, -1, 0, 3, 8, 10, 20], [None, 1, 2, -1]
    ):
        np.testing.assert_array_equal(rows[start:stop:step], whole[start:stop:step])
    np.testing.assert_array_equal(rows[[9, 0, 3, 3]], whole[[9, 0, 3, 3]])
    assert rows[-1][0] == whole[-1][0] and rows[3][0] == 20
    with pytest.raises(IndexError):
        rows[10]
    with pytest.raises(IndexError):
        rows[[0, 10]]
