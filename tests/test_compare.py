"""`pipeline compare`: the data behind each row, rows without the sort metric, tables that fit."""

import json

import pytest

from pipeline.core.errors import ConfigError
from pipeline.report.compare import KNOWN_METRICS, compare, format_value, to_markdown
from pipeline.report.evaluate import binary_metrics, multiclass_metrics
from tests.conftest import run_cli

SYNTHETIC = {"source": "synthetic", "fingerprint": "a" * 64, "classes": ["vertical", "horizontal"]}
MNIST = {"source": "mnist", "fingerprint": "b" * 64, "classes": [str(d) for d in range(10)]}


def ten_classes(accuracy: float) -> dict:
    return {"mse": 0.01, "log_loss": 0.1, "accuracy": accuracy, "macro_f1": accuracy, "top5_accuracy": 0.999,
            "per_class_accuracy": {str(d): accuracy for d in range(10)}, "params": 44426, "epochs": 10}  # fmt: skip


@pytest.fixture
def mixed(tmp_path):
    """An old synthetic run's cnn beside two MNIST models: 26 metric columns in all."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    runs = {
        "cnn": (
            {
                "mse": 0.07,
                "accuracy": 0.9125,
                "best_threshold_accuracy": 0.9175,
                "roc_auc": 0.97,
                "params": 10890113,
                "epochs": 8,
            },
            SYNTHETIC,
        ),
        "lenet5": (ten_classes(0.981), MNIST),
        "convnet": (ten_classes(0.975), MNIST),
    }
    for arch, (values, identity) in runs.items():
        (metrics / f"{arch}.json").write_text(json.dumps(values))
        (metrics / f"{arch}.dataset.json").write_text(json.dumps(identity))
    return tmp_path


def test_rows_from_other_data_are_labelled_and_warned_about(mixed):
    comparison = compare(mixed / "metrics", "best_threshold_accuracy")
    assert comparison.mixed
    assert comparison.datasets == {"lenet5": "mnist bbbbbbbb", "convnet": "mnist bbbbbbbb", "cnn": "synthetic aaaaaaaa"}
    note = comparison.data_note()
    assert note.startswith("Warning: these rows come from 2 different datasets") and "cnn on synthetic aaaaaaaa" in note
    assert note in to_markdown(comparison)
    for arch in ("cnn", "lenet5"):
        (mixed / "metrics" / f"{arch}.dataset.json").write_text(json.dumps(MNIST))
    same = compare(mixed / "metrics", "accuracy")
    assert not same.mixed and same.data_note() == "Data: mnist bbbbbbbb (every row)."
    (mixed / "metrics/cnn.dataset.json").unlink()
    assert compare(mixed / "metrics", "accuracy").datasets["cnn"] == "unknown data"


def test_a_row_without_the_sort_metric_is_ranked_by_accuracy(mixed):
    comparison = compare(mixed / "metrics", "best_threshold_accuracy")
    assert list(comparison.frame.index) == ["lenet5", "convnet", "cnn"]  # 0.981, 0.975 (accuracy) above 0.9175
    assert comparison.fallback == ["lenet5", "convnet"]
    assert "Without best_threshold_accuracy (ranked by accuracy): lenet5, convnet." in to_markdown(comparison)
    # lower-is-better: the rows that have it first, by it; the rest after, by accuracy
    (mixed / "metrics/cnn.json").write_text(json.dumps({"log_loss": 0.3, "accuracy": 0.5}))
    assert list(compare(mixed / "metrics", "log_loss").frame.index) == ["convnet", "lenet5", "cnn"]  # (a tie: by name)
    (mixed / "metrics/lenet5.json").write_text(json.dumps({"mse": 0.02, "accuracy": 0.99}))
    assert list(compare(mixed / "metrics", "log_loss").frame.index) == ["convnet", "cnn", "lenet5"]
    with pytest.raises(ConfigError, match="compare.sort: unknown metric 'acuracy'"):
        compare(mixed / "metrics", "acuracy")


def test_every_metric_evaluate_writes_is_a_known_sort_key():
    import numpy as np

    labels = np.array([0, 1, 1, 0])
    written = set(binary_metrics(labels, np.array([0.2, 0.8, 0.6, 0.4]))) | set(
        multiclass_metrics(np.arange(10), np.eye(10))
    )
    assert written | {"params", "epochs"} <= KNOWN_METRICS


@pytest.mark.parametrize(
    "value, text",
    [
        (10890113, "10,890,113"),
        (1418.0, "1,418"),
        (1032.4, "1,032"),
        (0.917512, "0.9175"),
        (8, "8"),
        (-0.025052, "-0.02505"),
        (None, "-"),
        (float("nan"), "-"),
    ],
)
def test_numbers_have_one_format(value, text):
    assert format_value(value) == text


def test_a_wide_table_is_transposed_to_fit_the_terminal(mixed):
    proc = run_cli("compare", cwd=mixed, env={"COLUMNS": "100"})
    lines = proc.stdout.splitlines()
    assert max(map(len, lines)) <= 100 and "…" not in proc.stdout
    assert any(line.startswith("┃ metric") for line in lines)  # metrics as rows, architectures as columns
    assert any("per_class_accuracy.9" in line and "0.981" in line for line in lines)
    assert "warning: these rows come from 2 different datasets" in proc.stderr
    assert "ranked by accuracy: lenet5, convnet" in proc.stderr
    wide = run_cli("compare", cwd=mixed, env={"COLUMNS": "1000"}).stdout
    assert any(line.startswith("┃ arch") for line in wide.splitlines())  # room enough: one row per architecture


def test_run_figures_show_on_the_terminal_only(mixed):
    (mixed / "runs/cnn").mkdir(parents=True)
    (mixed / "runs/cnn/run.json").write_text(json.dumps({"train_seconds": 49.2, "peak_rss_mb": 1418.3}))
    table = run_cli("compare", cwd=mixed, env={"COLUMNS": "400"}).stdout
    assert "train_seconds" in table and "1,418" in table
    markdown = run_cli("compare", "--md", "--out", "compare.md", cwd=mixed).stdout
    assert "train_seconds" not in markdown and markdown == (mixed / "compare.md").read_text()
