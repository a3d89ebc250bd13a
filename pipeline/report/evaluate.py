"""Validation metrics of a trained model, as seed 000 judged its models, and more.

Binary (one sigmoid unit, or two softmax units; label 1 is the positive class):
  mse, pearson        of the positive-class probability against the 0/1 label
  accuracy            at threshold 0.5
  best_threshold, best_threshold_accuracy
                      the best of `thresholds` evenly spaced thresholds (seed 000: 10); `prob > t`
  roc_auc, log_loss   threshold-free
  precision, recall, f1
                      of the positive class, at best_threshold

More than two classes:
  mse, log_loss, accuracy (arg-max), macro_f1, top5_accuracy (10 or more classes only),
  per_class_accuracy  {class name: share of that class's images predicted as it}

Always: params (weights in the model) and epochs (rows of the training history).

Beside `metrics/<arch>.json` (numbers only, for DVC) goes `metrics/<arch>.dataset.json`: the
identity of the data it was measured on (`pipeline.core.prepared.identity`), which `compare` and
`predict` read.

The record `evaluate` returns (`Evaluation`) and the threshold sweep live in
`pipeline.report.evaluation`, which `plots` shares: this module imports `plots`, never the reverse.

Every value is a finite number (DVC drops strings; JSON has no NaN). Where a metric is undefined
it takes a documented value instead:
  pearson     0.0 when predictions or labels are constant (no linear relation to measure)
  roc_auc     0.5 when the labels hold one class only (no pair to rank: chance level)
  precision   0.0 when nothing is predicted positive; recall 0.0 when no label is positive;
  f1          0.0 when precision and recall are both 0 (scikit-learn's zero_division=0)
  macro_f1    averaged over the classes present in the labels or the predictions
  log_loss    probabilities clipped to [eps, 1 - eps] (scikit-learn), so it is always finite
  per_class_accuracy
              a class with no validation image is left out (there is nothing to be right about)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from pipeline.core.checkpoint import checkpoint
from pipeline.core.errors import InputError
from pipeline.core.files import write_json
from pipeline.core.paths import dataset_file
from pipeline.core.prepared import identity, load_split, read_meta
from pipeline.report.evaluation import DIGITS, Evaluation, positive_prob, threshold_sweep
from pipeline.report.plots import write_plots

TOP_K = 5
TOP_K_MIN_CLASSES = 10  # top-5 accuracy says little with fewer classes


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined: no linear relation to measure)."""
    a, b = a.astype(np.float64) - a.mean(), b.astype(np.float64) - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def roc_auc(labels: np.ndarray, prob: np.ndarray) -> float:
    """Area under the ROC curve; 0.5 (chance) when the labels hold one class only."""
    if len(np.unique(labels)) < 2:
        return 0.5
    return float(skm.roc_auc_score(labels, prob))


def binary_metrics(labels: np.ndarray, prob: np.ndarray, n_thresholds: int = 10) -> dict[str, float]:
    """Metrics of probabilities `prob` of the positive class (label 1) against 0/1 `labels`."""
    labels, prob = np.asarray(labels).astype(np.int64), np.asarray(prob).astype(np.float64)
    cuts, accs = threshold_sweep(labels, prob, n_thresholds)
    best = int(np.argmax(accs))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, (prob > cuts[best]).astype(np.int64), labels=[1], average=None, zero_division=0
    )
    return {
        "mse": float(((prob - labels) ** 2).mean()),
        "pearson": pearson(prob, labels),
        "accuracy": float(((prob > 0.5) == (labels == 1)).mean()),
        "best_threshold": float(cuts[best]),
        "best_threshold_accuracy": float(accs[best]),
        "roc_auc": roc_auc(labels, prob),
        "log_loss": float(skm.log_loss(labels, prob, labels=[0, 1])),
        "precision": float(precision[0]),
        "recall": float(recall[0]),
        "f1": float(f1[0]),
    }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str] | None = None) -> dict:
    """Metrics of class probabilities `probs` (N, C) against integer `labels` (N,)."""
    labels, probs = np.asarray(labels).astype(np.int64), np.asarray(probs).astype(np.float64)
    n_classes = probs.shape[1]
    classes = classes or [str(c) for c in range(n_classes)]
    predicted = probs.argmax(1)
    everyone = list(range(n_classes))
    present = sorted(set(labels.tolist()) | set(predicted.tolist()))
    metrics: dict = {
        "mse": float(((probs - np.eye(n_classes)[labels]) ** 2).mean()),
        "log_loss": float(skm.log_loss(labels, probs, labels=everyone)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "macro_f1": float(skm.f1_score(labels, predicted, labels=present, average="macro", zero_division=0)),
    }
    if n_classes >= TOP_K_MIN_CLASSES:
        metrics["top5_accuracy"] = float(skm.top_k_accuracy_score(labels, probs, k=TOP_K, labels=everyone))
    confusion = skm.confusion_matrix(labels, predicted, labels=everyone)
    support = confusion.sum(1)
    metrics["per_class_accuracy"] = {classes[c]: float(confusion[c, c] / support[c]) for c in everyone if support[c]}
    return metrics


def compute_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str], n_thresholds: int) -> dict:
    """Binary metrics for two classes, multi-class ones otherwise; rounded so files are stable."""
    if probs.shape[1] == 2:
        metrics = binary_metrics(labels, positive_prob(probs), n_thresholds)
    else:
        metrics = multiclass_metrics(labels, probs, classes)
    return _round(metrics)


def _round(value):
    if isinstance(value, dict):
        return {key: _round(v) for key, v in value.items()}
    return round(float(value), DIGITS)


def evaluate(model_path: Path, data: Path, n_thresholds: int) -> Evaluation:
    """Metrics of the model at `model_path` on `data`'s validation split."""
    from pipeline.train.runtime import HISTORY_FILE, load_model, predict_probs  # (the metrics alone need no Keras)

    model = load_model(model_path)
    meta = read_meta(data)
    x_val, y_val = load_split(data, "val")
    if not len(x_val):
        raise InputError(f"{data}: the validation split is empty; set prepare.val_size")
    probs = predict_probs(model, x_val)
    if probs.shape[1] != len(meta["classes"]):
        raise InputError(
            f"{model_path} predicts {probs.shape[1]} classes but {data} has {len(meta['classes'])}: "
            "retrain on this data"
        )
    metrics = compute_metrics(y_val, probs, meta["classes"], n_thresholds)
    metrics["params"] = int(model.count_params())
    history_file = model_path.parent / HISTORY_FILE
    history = tuple(pd.read_csv(history_file).to_dict("records")) if history_file.exists() else ()
    if history_file.exists():
        metrics["epochs"] = len(history)
    return Evaluation(metrics, list(meta["classes"]), np.asarray(y_val), probs, n_thresholds, history)


def run(model_path: Path, data: Path, n_thresholds: int, metrics_out: Path, plots_dir: Path) -> Evaluation:
    """The evaluate stage: the metrics to `metrics_out`, the data's identity beside them
    (`<name>.dataset.json`) and every plot of the model to `plots_dir`."""
    evaluation = evaluate(model_path, data, n_thresholds)
    checkpoint("evaluate.predicted")
    write_json(metrics_out, evaluation.metrics)
    checkpoint("evaluate.metrics")
    write_json(dataset_file(metrics_out), identity(data))
    write_plots(evaluation, load_split(data, "val")[0], plots_dir)
    return evaluation
