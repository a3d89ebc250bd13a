"""Validation metrics of a trained model, as seed 000 judged its models.

Binary: MSE of the predicted probability, Pearson correlation between prediction and label,
accuracy at 0.5, and the best accuracy over `thresholds` evenly spaced thresholds. Every value is
a number (DVC drops strings); Pearson is 0.0 where it is undefined (constant predictions or labels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.prepare import read_meta
from pipeline.train import HISTORY_FILE, head_for, keras_seeded, load_split, make_dataset, targets
from pipeline.config import TrainSettings

DIGITS = 6


def thresholds(n: int) -> np.ndarray:
    """The centres of n equal bins of [0, 1]: 0.05, 0.15, ..., 0.95 for n = 10."""
    return (np.arange(n) + 0.5) / n


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined: no linear relation to measure)."""
    a, b = a.astype(np.float64) - a.mean(), b.astype(np.float64) - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def binary_metrics(labels: np.ndarray, prob: np.ndarray, n_thresholds: int = 10) -> dict[str, float]:
    """Metrics of probabilities `prob` of the positive class (label 1) against 0/1 `labels`."""
    labels, prob = labels.astype(np.float64), prob.astype(np.float64)
    cuts = thresholds(n_thresholds)
    accs = [float(((prob > t) == (labels == 1)).mean()) for t in cuts]
    best = int(np.argmax(accs))
    return {
        "mse": float(((prob - labels) ** 2).mean()),
        "pearson": pearson(prob, labels),
        "accuracy": float(((prob > 0.5) == (labels == 1)).mean()),
        "best_threshold": float(cuts[best]),
        "best_threshold_accuracy": accs[best],
    }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    onehot = np.eye(probs.shape[1])[labels]
    return {"mse": float(((probs - onehot) ** 2).mean()), "accuracy": float((probs.argmax(1) == labels).mean())}


def evaluate(model_path: Path, data: Path, n_thresholds: int) -> dict[str, float]:
    """Metrics of the model at `model_path` on `data`'s validation split."""
    if not model_path.exists():
        raise InputError(f"model not found: {model_path} (run `pipeline train` first)")
    meta = read_meta(data)
    keras = keras_seeded(0)
    model = keras.models.load_model(model_path)
    x_val, y_val = load_split(data, "val")
    if not len(x_val):
        raise InputError(f"{data}: the validation split is empty; set prepare.val_size")
    units = model.output_shape[-1]
    head = head_for(len(meta["classes"]), TrainSettings(head="sigmoid" if units == 1 else "softmax"))
    probs = model.predict(make_dataset(x_val, targets(y_val, head), 256), verbose=0)
    if units == 1:
        metrics = binary_metrics(y_val, probs[:, 0], n_thresholds)
    elif units == 2:
        metrics = binary_metrics(y_val, probs[:, 1], n_thresholds)
    else:
        metrics = multiclass_metrics(y_val, probs)
    metrics = {name: round(value, DIGITS) for name, value in metrics.items()}
    metrics["params"] = int(model.count_params())
    history = model_path.parent / HISTORY_FILE
    if history.exists():
        metrics["epochs"] = len(pd.read_csv(history))
    return metrics


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
