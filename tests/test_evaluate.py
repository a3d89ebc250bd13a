"""Every metric against an independent computation (SciPy, NumPy formulas, scikit-learn where the
code under test does not use it for that metric), and the edge cases where a metric is undefined."""

import json
import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, pearsonr
from sklearn.metrics import accuracy_score, mean_squared_error

from pipeline.core.files import write_json
from pipeline.report.compare import flatten
from pipeline.report.evaluate import binary_metrics, compute_metrics, multiclass_metrics, pearson
from pipeline.report.evaluation import thresholds

BINARY_KEYS = {
    "mse",
    "pearson",
    "accuracy",
    "best_threshold",
    "best_threshold_accuracy",
    "roc_auc",
    "log_loss",
    "precision",
    "recall",
    "f1",
}


@pytest.fixture
def predictions():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 500)
    prob = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1)
    return labels, prob


def auc_by_ranks(labels, prob):
    """AUC = P(score of a positive > score of a negative), ties half: the Mann-Whitney U statistic / (n1 n0)."""
    pos, neg = prob[labels == 1], prob[labels == 0]
    return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))


EPS = np.finfo(np.float64).eps


def log_loss_by_formula(labels, prob, eps=EPS):
    p = np.clip(prob, eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def counts_at(labels, prob, t):
    pred = prob > t
    tp = int(np.sum(pred & (labels == 1)))
    fp = int(np.sum(pred & (labels == 0)))
    fn = int(np.sum(~pred & (labels == 1)))
    return tp, fp, fn


def test_binary_metrics_match_independent_computation(predictions):
    labels, prob = predictions
    m = binary_metrics(labels, prob, 10)
    assert set(m) == BINARY_KEYS
    assert m["mse"] == pytest.approx(mean_squared_error(labels, prob))
    assert m["pearson"] == pytest.approx(pearsonr(prob, labels).statistic)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, prob > 0.5))
    sweep = {t: accuracy_score(labels, prob > t) for t in np.linspace(0.05, 0.95, 10)}
    best = max(sweep, key=sweep.get)
    assert m["best_threshold"] == pytest.approx(best)
    assert m["best_threshold_accuracy"] == pytest.approx(sweep[best])
    assert m["roc_auc"] == pytest.approx(auc_by_ranks(labels, prob))
    assert m["log_loss"] == pytest.approx(log_loss_by_formula(labels, prob))
    tp, fp, fn = counts_at(labels, prob, best)
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_binary_metrics_on_a_hand_worked_example():
    labels = np.array([0, 0, 1, 1, 1])
    prob = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = binary_metrics(labels, prob, 10)
    # Ranked pairs (pos, neg): 0.4 beats 0.1 only; 0.8 and 0.9 beat both -> 5 of 6.
    assert m["roc_auc"] == pytest.approx(5 / 6)
    # Thresholds 0.05 ... 0.95: 0.15, 0.25 and 0.35 all give 4/5 right; the first of them wins.
    assert m["best_threshold"] == pytest.approx(0.15)
    assert m["best_threshold_accuracy"] == pytest.approx(0.8)
    # At 0.15: predicted positive 0.6, 0.4, 0.8, 0.9 -> tp 3, fp 1, fn 0.
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.75, 1.0, 6 / 7))
    assert m["accuracy"] == pytest.approx(0.6)  # at 0.5: 0.6 is a false positive, 0.4 a false negative
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.8, 0.9])))


def test_thresholds_are_evenly_spaced_bin_centres():
    assert thresholds(10) == pytest.approx(np.arange(0.05, 1.0, 0.1))
    assert thresholds(1) == pytest.approx([0.5])


def assert_json_safe(metrics):
    json.dumps(metrics, allow_nan=False)  # no NaN/inf ever reaches a metrics file
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in flatten(metrics).values())


def test_constant_predictions_give_documented_values():
    labels = np.array([0, 1, 0, 1, 1])
    m = binary_metrics(labels, np.full(5, 0.3), 10)
    assert m["pearson"] == 0.0  # undefined (constant predictions): documented 0.0
    assert m["roc_auc"] == pytest.approx(0.5)  # every pair tied
    assert m["roc_auc"] == pytest.approx(auc_by_ranks(labels, np.full(5, 0.3)))
    assert m["accuracy"] == pytest.approx(0.4)
    assert m["log_loss"] == pytest.approx(log_loss_by_formula(labels, np.full(5, 0.3)))
    assert_json_safe(m)


def test_one_class_only_in_labels():
    labels = np.ones(4, dtype=int)
    prob = np.array([0.9, 0.8, 0.2, 0.7])
    m = binary_metrics(labels, prob, 10)
    assert m["pearson"] == 0.0  # constant labels
    assert m["roc_auc"] == 0.5  # undefined (no negative to rank against): documented 0.5
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["best_threshold_accuracy"] == pytest.approx(1.0)
    assert m["log_loss"] == pytest.approx(log_loss_by_formula(labels, prob))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1.0, 1.0, 1.0))
    assert_json_safe(m)

    negatives = binary_metrics(np.zeros(3, dtype=int), np.array([0.1, 0.2, 0.3]), 10)
    # No positive label and none predicted at the best threshold: precision, recall and F1 are 0 by convention.
    assert (negatives["precision"], negatives["recall"], negatives["f1"], negatives["roc_auc"]) == (0.0, 0.0, 0.0, 0.5)
    assert negatives["best_threshold_accuracy"] == 1.0
    assert_json_safe(negatives)


def test_certain_predictions_keep_log_loss_finite():
    labels = np.array([0, 1, 1])
    m = binary_metrics(labels, np.array([1.0, 0.0, 1.0]), 10)  # two confidently wrong
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 20
    assert m["log_loss"] == pytest.approx(log_loss_by_formula(labels, np.array([1.0, 0.0, 1.0])))
    assert_json_safe(m)


def test_pearson_is_symmetric_and_scale_free():
    a, b = np.array([1.0, 2.0, 4.0, 3.0]), np.array([0, 1, 1, 0])
    assert pearson(a, b) == pytest.approx(pearson(b, a))
    assert pearson(a * 10 + 3, b) == pytest.approx(pearson(a, b))


def f1_by_counts(labels, predicted, classes):
    scores = []
    for c in classes:
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_multiclass_metrics_match_independent_computation():
    rng = np.random.default_rng(3)
    n, k = 400, 12
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = [f"c{i}" for i in range(k)]
    m = multiclass_metrics(labels, probs, names)
    predicted = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(np.mean(predicted == labels))
    assert m["mse"] == pytest.approx(mean_squared_error(np.eye(k)[labels], probs))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(n), labels])))
    # Top-5: the true class's probability is beaten by at most 4 others.
    rank = (probs > probs[np.arange(n), labels][:, None]).sum(1)
    assert m["top5_accuracy"] == pytest.approx(np.mean(rank < 5))
    assert m["top5_accuracy"] > m["accuracy"]
    assert m["macro_f1"] == pytest.approx(f1_by_counts(labels, predicted, range(k)))
    assert m["per_class_accuracy"] == pytest.approx({names[c]: np.mean(predicted[labels == c] == c) for c in range(k)})
    assert_json_safe(m)


def test_multiclass_hand_worked_example_and_edge_cases():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    m = multiclass_metrics(labels, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["mse"] == pytest.approx(mean_squared_error(np.eye(3)[labels], probs))
    assert "top5_accuracy" not in m  # fewer than 10 classes
    assert m["per_class_accuracy"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.5})
    # F1: a = 2*1/(2+1+0) = 2/3, b = 1, c = 2*1/(2+0+1) = 2/3.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)

    # A class with no validation image and never predicted: left out of per-class accuracy and of macro F1.
    absent = multiclass_metrics(
        np.array([0, 1, 1]), np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]), ["a", "b", "c"]
    )
    assert set(absent["per_class_accuracy"]) == {"a", "b"}
    assert absent["macro_f1"] == pytest.approx(f1_by_counts(np.array([0, 1, 1]), np.array([0, 1, 0]), [0, 1]))
    assert_json_safe(absent)

    # One class only, constant predictions.
    one = multiclass_metrics(np.zeros(5, dtype=int), np.full((5, 3), 1 / 3), ["a", "b", "c"])
    assert one["accuracy"] == 1.0 and one["per_class_accuracy"] == {"a": 1.0}
    assert one["log_loss"] == pytest.approx(np.log(3))
    assert_json_safe(one)


def test_compute_metrics_picks_binary_for_two_columns_and_rounds():
    labels = np.array([0, 1, 1, 0])
    p = np.array([0.1234567891, 0.9, 0.6, 0.4])
    m = compute_metrics(labels, np.stack([1 - p, p], 1), ["neg", "pos"], 10)
    assert set(m) == BINARY_KEYS
    assert m["mse"] == round(float(np.mean((p - labels) ** 2)), 6)
    many = compute_metrics(np.array([0, 1, 2]), np.eye(3), ["a", "b", "c"], 10)
    assert many["accuracy"] == 1.0 and "per_class_accuracy" in many


def test_write_metrics_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"pearson": float("nan")})
    write_json(tmp_path / "m.json", {"accuracy": 0.5, "per_class_accuracy": {"a": 1.0}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"accuracy": 0.5, "per_class_accuracy": {"a": 1.0}}
