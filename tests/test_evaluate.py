"""Metrics against independent computations (SciPy, scikit-learn) and their edge cases."""

import json

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, mean_squared_error

from pipeline.evaluate import binary_metrics, multiclass_metrics, pearson, thresholds


@pytest.fixture
def predictions():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 500)
    prob = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1)
    return labels, prob


def test_binary_metrics_match_independent_computation(predictions):
    labels, prob = predictions
    m = binary_metrics(labels, prob, 10)
    assert m["mse"] == pytest.approx(mean_squared_error(labels, prob))
    assert m["pearson"] == pytest.approx(pearsonr(prob, labels).statistic)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, prob > 0.5))
    sweep = {t: accuracy_score(labels, prob > t) for t in np.linspace(0.05, 0.95, 10)}
    best = max(sweep, key=sweep.get)
    assert m["best_threshold"] == pytest.approx(best)
    assert m["best_threshold_accuracy"] == pytest.approx(sweep[best])


def test_thresholds_are_evenly_spaced_bin_centres():
    assert thresholds(10) == pytest.approx(np.arange(0.05, 1.0, 0.1))
    assert thresholds(1) == pytest.approx([0.5])


def test_constant_predictions_give_a_defined_pearson_and_json_safe_numbers():
    labels = np.array([0, 1, 0, 1, 1])
    m = binary_metrics(labels, np.full(5, 0.3), 10)
    assert m["pearson"] == 0.0
    assert m["accuracy"] == pytest.approx(0.4)
    json.dumps(m, allow_nan=False)  # no NaN/inf ever reaches a metrics file


def test_one_class_only_in_labels():
    labels = np.ones(4, dtype=int)
    m = binary_metrics(labels, np.array([0.9, 0.8, 0.2, 0.7]), 10)
    assert m["pearson"] == 0.0
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["best_threshold_accuracy"] == pytest.approx(1.0)
    json.dumps(m, allow_nan=False)


def test_pearson_is_symmetric_and_scale_free():
    a, b = np.array([1.0, 2.0, 4.0, 3.0]), np.array([0, 1, 1, 0])
    assert pearson(a, b) == pytest.approx(pearson(b, a))
    assert pearson(a * 10 + 3, b) == pytest.approx(pearson(a, b))


def test_multiclass_metrics():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    m = multiclass_metrics(labels, probs)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["mse"] == pytest.approx(mean_squared_error(np.eye(3)[labels], probs))
