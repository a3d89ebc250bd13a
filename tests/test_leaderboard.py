"""pipeline.report.leaderboard: every experiment x architecture, the params that differ, sorted."""

from __future__ import annotations

import pytest

from pipeline.core.errors import ConfigError, InputError
from pipeline.report.leaderboard import leaderboard


def exp(name, lr, thresholds, cnn_acc, mlp_acc, state="Success"):
    return {
        "Experiment": name,
        "rev": name or "workspace",
        "State": state,
        "train.learning_rate": lr,
        "params.yaml:evaluate.thresholds": thresholds,
        "train.epochs": 8,  # (both of DVC's namings)
        "metrics/cnn.json:accuracy": cnn_acc,
        "metrics/cnn.json:mse": 1 - cnn_acc,
        "metrics/mlp.json:accuracy": mlp_acc,
        "metrics/mlp.json:mse": 1 - mlp_acc,
        "dvclive/cnn/metrics.json:step": 7.0,  # training curves are not leaderboard rows
        "data/prepared": f"{abs(hash(name)) % 10**32:032x}.dir",  # nor are dependencies' hashes params
    }


ROWS = [
    exp(None, 0.001, 10, 0.90, 0.50),
    exp("fast-lr", 0.01, 10, 0.95, 0.55),
    exp("more-cuts", 0.001, 20, 0.91, 0.52),
    {"Experiment": "queued-one", "rev": "abc", "State": "Queued"},
]


def test_rows_per_experiment_and_arch_sorted_with_the_params_that_differ():
    table = leaderboard(ROWS, "accuracy")
    assert list(table.columns) == [
        "experiment",
        "arch",
        "accuracy",
        "mse",
        "evaluate.thresholds",
        "train.learning_rate",
    ]
    assert list(zip(table.experiment, table.arch)) == [
        ("fast-lr", "cnn"),
        ("more-cuts", "cnn"),
        ("workspace", "cnn"),
        ("fast-lr", "mlp"),
        ("more-cuts", "mlp"),
        ("workspace", "mlp"),
    ]
    assert table.loc[0, "train.learning_rate"] == 0.01 and table.loc[1, "evaluate.thresholds"] == 20


def test_lower_is_better_sorts_ascending_and_metrics_can_be_chosen():
    table = leaderboard(ROWS, "mse", ["mse"])
    assert list(table.columns[:3]) == ["experiment", "arch", "mse"]
    assert table.mse.is_monotonic_increasing


def test_unknown_sort_or_metric_and_nothing_to_show():
    with pytest.raises(ConfigError, match="--sort 'f1'.*valid choices: accuracy, mse"):
        leaderboard(ROWS, "f1")
    with pytest.raises(ConfigError, match="--metric 'recall'"):
        leaderboard(ROWS, "accuracy", ["recall"])
    with pytest.raises(InputError, match="no experiment has metrics"):
        leaderboard([ROWS[-1]], "accuracy")


def test_a_metric_named_without_its_file_is_given_it_back():
    """DVC's flat table writes `mse` instead of `metrics/convnet.json:mse` when no other file has an
    `mse` (one architecture alone): the row is still found, with every metric."""
    from pipeline.report.leaderboard import full_metric_names

    rows = [
        {
            "Experiment": "seed002",
            "rev": "abc",
            "metrics/convnet.json:accuracy": 0.9,
            "dvclive/convnet/metrics.json:accuracy": 0.8,
            "mse": 0.01,
            "loss": 0.3,
            "train.epochs": 1,
        }
    ]
    names = {"metrics/convnet.json": ["accuracy", "mse"], "dvclive/convnet/metrics.json": ["accuracy", "loss"]}
    table = leaderboard(full_metric_names(rows, names), "accuracy", ["accuracy", "mse"])
    assert table.to_dict("records") == [{"experiment": "seed002", "arch": "convnet", "accuracy": 0.9, "mse": 0.01}]


def test_each_metrics_files_names_are_read_from_the_experiment_records():
    """`dvc exp show --json` records: a baseline with its experiments under `experiments`; nested
    metrics are named with dots as in the flat table; a file that failed to load adds no name."""
    from pipeline.report.leaderboard import metric_names

    def record(metrics, experiments=None):
        return {"rev": "abc", "data": {"metrics": metrics, "params": {}}, "experiments": experiments}

    records = [
        {"rev": "workspace", "data": None, "experiments": None},
        record(
            {"metrics/cnn.json": {"data": {"mse": 0.1, "per_class_accuracy": {"cat": 1.0}, "none": {}}}},
            [
                {
                    "revs": [
                        record(
                            {
                                "metrics/cnn.json": {"data": {"mse": 0.2, "accuracy": 0.9}},
                                "metrics/mlp.json": {"error": {"msg": "missing", "type": "FileNotFoundError"}},
                            }
                        )
                    ]
                }
            ],
        ),
    ]
    assert metric_names(records) == {"metrics/cnn.json": ["mse", "per_class_accuracy.cat", "accuracy"]}
