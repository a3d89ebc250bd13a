"""The architecture registry: the seeds' models layer for layer (parameter counts), their heads and
options, `pipeline models`, and one epoch of training for every architecture and preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.params import load_params
from pipeline.train.models import ARCHITECTURES, build_model
from pipeline.train.models.alexnet import AlexnetParams
from pipeline.train.models.common import Head
from pipeline.train.models.mlp import MlpParams
from tests.conftest import run_cli

# Reference counts (DESIGN.md), measured in Keras on the seeds' code.
REFERENCE = {
    "alexnet": ((227, 227, 3), 2, 62_380_346),
    "lenet5": ((28, 28, 1), 10, 44_426),
    "convnet": ((28, 28, 1), 10, 9_098),
}


def write_prepared(
    root: Path, n_train: int, n_val: int, shape: tuple[int, int, int], classes: int, seed: int = 0
) -> Path:
    """Arrays as `pipeline prepare` writes them (uint8 images, int32 labels, meta.json); class c is
    brighter by c steps so there is something to learn."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        labels = (np.arange(n) % classes).astype(np.int32)
        images = (
            rng.integers(0, 128, (n, *shape)).astype(np.uint8)
            + (labels * (127 // max(classes - 1, 1))).astype(np.uint8)[:, None, None, None]
        )
        np.save(root / f"{split}_x.npy", images)
        np.save(root / f"{split}_y.npy", labels)
    meta = {
        "classes": [f"class{c}" for c in range(classes)],
        "input_shape": list(shape),
        "splits": {"train": n_train, "val": n_val},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def defaults():
    return load_params(Path("/nonexistent/params.yaml"))


# --- parameter counts --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(REFERENCE))
def test_reference_parameter_counts(arch):
    shape, classes, expected = REFERENCE[arch]
    model = build_model(arch, shape, Head(classes, "softmax"), ARCHITECTURES[arch].parse({}))
    assert model.count_params() == expected


def test_seed_004_mlp_count():
    model = build_model("mlp", (28, 28, 1), Head(10, "softmax"), MlpParams(hidden=[256, 256, 256]))
    assert model.count_params() == 335_114


def test_alexnet_paper_extras_add_layers_not_parameters():
    plain = build_model("alexnet", (67, 67, 3), Head(2, "softmax"), AlexnetParams())
    extras = build_model("alexnet", (67, 67, 3), Head(2, "softmax"), AlexnetParams(lrn=True, dropout=0.5))
    assert extras.count_params() == plain.count_params()
    names = [layer.__class__.__name__ for layer in extras.layers]
    assert names.count("LocalResponseNormalization") == 2 and names.count("Dropout") == 2
    assert "LocalResponseNormalization" not in [layer.__class__.__name__ for layer in plain.layers]


def test_local_response_normalization_matches_the_paper():
    from pipeline.train.models.layers import LocalResponseNormalization

    x = np.random.default_rng(0).normal(0, 30, (2, 3, 3, 9)).astype(np.float32)
    got = np.asarray(LocalResponseNormalization()(x))
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75  # AlexNet section 3.3
    expected = np.empty_like(x)
    for c in range(9):
        window = x[..., max(0, c - n // 2) : min(9, c + n // 2 + 1)]
        expected[..., c] = x[..., c] / (k + alpha * (window**2).sum(-1)) ** beta
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_presets_are_the_seed_000_variants():
    counts = {}
    for name in ("cnn-24", "cnn-48x2", "cnn-128x2", "cnn-64-128-fc512"):
        model = build_model(name, (94, 125, 3), Head(1, "sigmoid"), ARCHITECTURES[name].parse({}))
        convs = [layer.filters for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
        dense = [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"]
        counts[name] = (convs, dense)
    assert counts == {
        "cnn-24": ([24], [256, 256, 1]),
        "cnn-48x2": ([48, 48], [256, 256, 1]),
        "cnn-128x2": ([128, 128], [256, 256, 1]),
        "cnn-64-128-fc512": ([64, 128], [512, 512, 1]),
    }


# --- heads -------------------------------------------------------------------------------------


def test_head_follows_the_data_and_the_choice():
    from pipeline.train.runtime import head_for

    assert head_for(2, "sigmoid") == Head(1, "sigmoid")
    assert head_for(2, "softmax") == Head(2, "softmax")
    assert head_for(10, "sigmoid") == Head(10, "softmax")
    settings, _ = defaults().train.for_arch("alexnet")
    assert settings.head == "softmax"  # seed 001's two-way softmax is alexnet's own default


# --- pipeline models ---------------------------------------------------------------------------


def models_command(*args: str) -> str:
    """`pipeline ARGS` in this process (TensorFlow is loaded once for the whole module)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_models_command_lists_every_architecture_with_reference_counts():
    rows = json.loads(models_command("models", "--json"))
    assert [row["arch"] for row in rows] == list(ARCHITECTURES)
    by_arch = {row["arch"]: row for row in rows}
    for arch, (shape, classes, expected) in REFERENCE.items():
        assert by_arch[arch]["params"] == expected
        assert by_arch[arch]["input_shape"] == list(shape) and by_arch[arch]["classes"] == classes
    assert all(isinstance(row["params"], int) and row["params"] > 0 for row in rows)  # each builds at its seed's input
    assert (
        by_arch["cnn"]["head"] == "1 sigmoid"
        and by_arch["alexnet"]["head"] == "2 softmax"
        and by_arch["lenet5"]["head"] == "10 softmax"
    )


def test_models_command_at_a_given_shape():
    out = models_command(
        "-S",
        "train.mlp.hidden=[256,256,256]",
        "models",
        "--arch",
        "mlp",
        "--arch",
        "alexnet",
        "--input-shape",
        "28,28,1",
        "--classes",
        "10",
        "--json",
    )
    rows = {row["arch"]: row for row in json.loads(out)}
    assert rows.keys() == {"mlp", "alexnet"}
    assert rows["mlp"]["params"] == 335_114
    assert rows["alexnet"]["params"] is None and "too small" in rows["alexnet"]["note"]
    table = models_command("models", "--arch", "convnet")
    assert "convnet" in table and "9,098" in table and "MNIST" in table


@pytest.mark.parametrize(
    "args, expected",
    [
        (("models", "--input-shape", "227,227"), "--input-shape '227,227': expected HEIGHT,WIDTH,CHANNELS"),
        (("models", "--arch", "resnet"), "unknown value 'resnet'"),
        (
            ("-S", "train.augment=fancy", "models"),
            "train.augment: unknown augmentation 'fancy'; valid choices: none, seed001, seed003",
        ),
        (("-S", "train.alexnet.lrm=true", "models"), "train.alexnet.lrm: unknown key; valid keys:"),
        (("-S", "train.mixed_precision=sometimes", "train"), "train.mixed_precision: expected auto, true or false"),
    ],
)
def test_model_option_errors_are_one_line(tmp_path, args, expected):
    (tmp_path / "params.yaml").write_text("")  # the defaults, without the warning that no params.yaml is there
    proc = run_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_categorical_crossentropy_needs_a_softmax_head(tmp_path):
    from pipeline.train.loop import train

    data = write_prepared(tmp_path / "data", 8, 4, (8, 8, 3), 2)
    settings, params = load_params(Path("/nonexistent"), {"train.loss": "categorical_crossentropy"}).train.for_arch(
        "mlp"
    )
    with pytest.raises(ConfigError, match="needs a softmax output"):
        train("mlp", data, tmp_path / "out", settings, params)


# --- one epoch of every architecture -------------------------------------------------------------

# (input, classes) small enough to train in a moment; AlexNet's stride-4 stem needs 67x67 at least.
TRAIN_SHAPES = {
    "alexnet": ((67, 67, 3), 2),
    "lenet5": ((28, 28, 1), 10),
    "convnet": ((28, 28, 1), 10),
    "preact": ((16, 16, 3), 10),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    shapes = {shape for shape in TRAIN_SHAPES.values()} | {((32, 32, 3), 2)}
    return {
        shape: write_prepared(root / f"{'x'.join(map(str, shape[0]))}-{shape[1]}", 16, 8, *shape) for shape in shapes
    }


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=pytest.mark.slow) if a == "alexnet" else a for a in ARCHITECTURES]
)  # (alexnet's 62M weights: the slow tier)
def test_each_architecture_trains_one_epoch(arch, datasets, tmp_path):
    from pipeline.train.loop import train
    from pipeline.train.runtime import BEST_FILE, HISTORY_FILE, load_model

    shape, classes = TRAIN_SHAPES.get(arch, ((32, 32, 3), 2))
    overrides = {
        f"train.{arch}.epochs": 1,
        f"train.{arch}.batch_size": 8,
        "train.head": "softmax" if arch == "cnn-24" else "sigmoid",
    }
    settings, params = load_params(Path("/nonexistent"), overrides).train.for_arch(arch)
    result = train(arch, datasets[(shape, classes)], tmp_path / arch, settings, params, live_dir=tmp_path / "live")
    assert result.history.keys() >= {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert all(len(values) == 1 and np.isfinite(values[0]) for values in result.history.values())
    assert len((tmp_path / arch / HISTORY_FILE).read_text().splitlines()) == 2
    assert (tmp_path / arch / BEST_FILE).exists() and not (tmp_path / ".backup" / arch).exists()
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["step"] == 0
    model = load_model(result.model_path)
    units = 1 if classes == 2 and settings.head == "sigmoid" else classes
    probs = model.predict(np.zeros((2, *shape), np.uint8), verbose=0)
    assert probs.shape == (2, units) and model.count_params() == result.params
    if units > 1:
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
