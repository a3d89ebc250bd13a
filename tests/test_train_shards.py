"""Training and evaluation on the shard layout of prepared data: the interleaved epoch order, exact
resume, streamed statistics, determinism across runs and prepare engines, and the same results as
the arrays layout when the batches are the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.prepared import load_split, read_meta
from pipeline.params import load_params
from pipeline.prepare.params import PrepareParams
from pipeline.prepare.prepare import prepare
from pipeline.train.models.common import Head
from tests.shards import tiny_samples, write_shard_dataset
from tests.test_train import batches, same_weights


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """120 tiny images in 4 shards, prepared on the local engine; and the same rows as the arrays layout."""
    root = tmp_path_factory.mktemp("train-shards")
    write_shard_dataset(root / "raw", tiny_samples(120), 32)
    prepare(root / "raw", root / "local", PrepareParams(size=(8, 8)))
    arrays = root / "arrays"  # the same rows, concatenated, as the arrays layout
    arrays.mkdir()
    for split in ("train", "val"):
        x, y = load_split(root / "local", split)
        np.save(arrays / f"{split}_x.npy", np.asarray(x))
        np.save(arrays / f"{split}_y.npy", y)
    meta = {k: v for k, v in read_meta(root / "local").items() if k not in ("layout", "shards")}
    (arrays / "meta.json").write_text(json.dumps(meta))
    return {"root": root, "local": root / "local", "arrays": arrays}


@pytest.fixture(scope="module")
def on_dask(prepared) -> Path:
    """The same shards prepared on a Dask LocalCluster (127.0.0.1)."""
    prepare(prepared["root"] / "raw", prepared["root"] / "dask", PrepareParams(size=(8, 8), engine="dask"))
    return prepared["root"] / "dask"


def test_sharded_epoch_order():
    from pipeline.train.loop import sharded_epoch_order

    counts = [5, 0, 7, 3, 9, 4]
    order = sharded_epoch_order(counts, seed=1, epoch=2)
    assert sorted(order.tolist()) == list(range(sum(counts)))  # every row once
    np.testing.assert_array_equal(order, sharded_epoch_order(counts, seed=1, epoch=2))
    assert not np.array_equal(order, sharded_epoch_order(counts, 1, 3)) and not np.array_equal(
        order, sharded_epoch_order(counts, 2, 2)
    )
    shard_of = np.searchsorted(np.cumsum([0, *counts]), order, side="right") - 1
    assert len(set(shard_of[:4].tolist())) == 4  # four shards interleaved, one row each in turn
    assert sharded_epoch_order([3], 0, 0).tolist() != [] and sorted(sharded_epoch_order([3], 0, 0).tolist()) == [
        0,
        1,
        2,
    ]


def test_sharded_training_dataset_resumes_mid_run_with_the_same_batches(prepared):
    from pipeline.train.loop import training_dataset

    x, labels = load_split(prepared["local"], "train")
    head = Head(2, "softmax")
    full = batches(training_dataset(x, labels, head, 16, seed=5, first_epoch=0, epochs=3))
    steps = -(-len(x) // 16)
    assert len(full) == 3 * steps
    seen = np.concatenate([b[0] for b in full[:steps]]).reshape(len(x), -1)
    assert sorted(map(bytes, seen)) == sorted(
        map(bytes, np.asarray(x).reshape(len(x), -1))
    )  # each example once per epoch
    resumed = batches(training_dataset(x, labels, head, 16, seed=5, first_epoch=2, epochs=3))
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(full[2 * steps :], resumed, strict=True)
    )
    assert not np.array_equal(full[0][0], full[steps][0])  # reshuffled every epoch


def test_channel_stats_stream_the_shards(prepared):
    from pipeline.train.loop import channel_stats

    x, _ = load_split(prepared["local"], "train")
    whole = np.asarray(x)
    mean, std = channel_stats(x, chunk=10)
    np.testing.assert_allclose(mean, whole.reshape(-1, 3).mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, whole.reshape(-1, 3).std(0), rtol=1e-9)


def _train_and_evaluate(data: Path, out: Path, batch_size: int, normalize: str = "rescale"):
    from pipeline.report.evaluate import evaluate
    from pipeline.train.loop import train

    overrides = {
        "train.epochs": 2,
        "train.batch_size": batch_size,
        "train.mlp.hidden": [8],
        "train.mlp.learning_rate": 0.001,
        "train.normalize": normalize,
    }
    settings, params = load_params(Path("/nonexistent"), overrides).train.for_arch("mlp")
    train("mlp", data, out, settings, params)
    return evaluate(out / "model.keras", data, 10).metrics


@pytest.mark.slow
def test_training_on_shards_is_deterministic_across_runs_and_engines(prepared, on_dask):
    root = prepared["root"]
    first = _train_and_evaluate(prepared["local"], root / "m1", 16, "standardize")
    again = _train_and_evaluate(prepared["local"], root / "m2", 16, "standardize")
    dask = _train_and_evaluate(on_dask, root / "m3", 16, "standardize")
    assert first == again == dask and 0 <= first["accuracy"] <= 1
    assert (
        (root / "m1/history.csv").read_bytes()
        == (root / "m2/history.csv").read_bytes()
        == (root / "m3/history.csv").read_bytes()
    )
    assert same_weights(root / "m1/model.keras", root / "m2/model.keras") and same_weights(
        root / "m1/model.keras", root / "m3/model.keras"
    )
    # (the .keras files differ in layer names only: Keras numbers them per process)


def test_same_batches_give_the_same_results_as_the_arrays_layout(prepared):
    """One batch per epoch (batch size = the training split): both layouts feed the same batches, so
    training and the streamed evaluation must agree exactly."""
    root = prepared["root"]
    n_train = read_meta(prepared["local"])["splits"]["train"]
    sharded = _train_and_evaluate(prepared["local"], root / "s", n_train)
    arrays = _train_and_evaluate(prepared["arrays"], root / "a", n_train)
    assert sharded == arrays
    assert (root / "s" / "history.csv").read_bytes() == (root / "a" / "history.csv").read_bytes()
    assert same_weights(root / "s/model.keras", root / "a/model.keras")
    from pipeline.report.evaluate import run

    for name in (
        "s",
        "a",
    ):  # the evaluate stage: metrics, data identity, every plot (the prediction grid reads rows of the shards)
        run(
            root / name / "model.keras",
            prepared["local" if name == "s" else "arrays"],
            10,
            root / f"{name}-metrics.json",
            root / f"{name}-plots",
        )
    assert (root / "s-metrics.json").read_bytes() == (root / "a-metrics.json").read_bytes()
    plots = sorted(p.name for p in (root / "s-plots").iterdir())
    assert "predictions.png" in plots and plots == sorted(p.name for p in (root / "a-plots").iterdir())
    assert all((root / "s-plots" / name).read_bytes() == (root / "a-plots" / name).read_bytes() for name in plots)


def test_an_interrupted_training_on_shards_resumes_as_an_uninterrupted_one(prepared, tmp_path, monkeypatch):
    """Stopped after its second epoch's backup (as a kill would), the rerun continues at epoch 2 and
    ends with the history and weights of the uninterrupted run."""
    import keras

    from pipeline.train.loop import train
    from pipeline.train.resume import POINTER

    data = prepared["local"]
    settings, params = load_params(
        Path("/nonexistent"), {"train.epochs": 3, "train.batch_size": 16, "train.mlp.hidden": [4]}
    ).train.for_arch("mlp")
    uninterrupted = train("mlp", data, tmp_path / "whole", settings, params)

    class Killed(BaseException):
        pass

    save_weights, calls = keras.Model.save_weights, []

    def dies_on_the_third(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 3:
            raise Killed
        return save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", dies_on_the_third)
    with pytest.raises(Killed):
        train("mlp", data, tmp_path / "m", settings, params)
    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    assert json.loads((tmp_path / ".backup" / "m" / "epochs" / POINTER).read_text()) == {"epoch": 2}
    resumed = train("mlp", data, tmp_path / "m", settings, params)
    assert resumed.resumed_from == 2 and resumed.history == uninterrupted.history
    assert same_weights(tmp_path / "m" / "model.keras", uninterrupted.model_path)
