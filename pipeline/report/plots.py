"""Plots of one evaluated model: DVC plot data (arrays of records) and seed 001's prediction grid.

Written to `plots/<arch>/` by `pipeline evaluate`, declared in dvc.yaml so `dvc plots show` draws them:
  thresholds.json   [{threshold, accuracy}]  seed 000's threshold sweep
  roc.json          [{fpr, tpr}]             the ROC curve
  confusion.json    [{actual, predicted}]    one record per validation image (drawn with the counts shown)
  curves.json       [{epoch, metric, split, value}]  the training history: loss and accuracy per epoch,
                    train and validation, drawn overlaid in one chart per metric
  predictions.png   seed 001's grid of validation images, predicted class in blue when right and red
                    when wrong, and a gallery of the most confident mistakes

With more than two classes, the threshold sweep and the ROC curve are one-vs-rest, micro-averaged:
every class's probability is scored against its own 0/1 indicator, as in scikit-learn's ROC example.
Records are rounded, so the files are byte-identical for the same model and data.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from pipeline.core.files import write_atomic, write_records
from pipeline.report.evaluation import DIGITS, Evaluation, positive_prob, threshold_sweep

THRESHOLDS = "thresholds.json"
ROC = "roc.json"
CONFUSION = "confusion.json"
CURVES = "curves.json"
CURVE_METRICS = ("loss", "accuracy")
SPLIT_NAMES = {"": "train", "val_": "validation"}  # Keras' history: loss, val_loss, ...
PREDICTIONS = "predictions.png"
GRID = 8  # seed 001 showed 8 predictions
COLUMNS = 4
RIGHT, WRONG = "blue", "red"


def _binary_view(evaluation: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 truth, score) pairs: the positive class for two classes, one-vs-rest for more."""
    if evaluation.probs.shape[1] == 2:
        return evaluation.labels, positive_prob(evaluation.probs)
    n_classes = evaluation.probs.shape[1]
    return np.eye(n_classes, dtype=np.int64)[evaluation.labels].ravel(), evaluation.probs.ravel()


def threshold_records(evaluation: Evaluation) -> list[dict]:
    cuts, accs = threshold_sweep(*_binary_view(evaluation), evaluation.n_thresholds)
    return [{"threshold": round(float(t), DIGITS), "accuracy": round(float(a), DIGITS)} for t, a in zip(cuts, accs)]


def roc_records(evaluation: Evaluation) -> list[dict]:
    """The ROC curve's corners; the chance diagonal when the labels hold one class (as roc_auc = 0.5)."""
    truth, score = _binary_view(evaluation)
    if len(np.unique(truth)) < 2:
        fpr, tpr = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    else:
        fpr, tpr, _ = roc_curve(truth, score)
    return [{"fpr": round(float(f), DIGITS), "tpr": round(float(t), DIGITS)} for f, t in zip(fpr, tpr)]


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """The model's decision: the most probable class (probability > 0.5 for two classes)."""
    return probs.argmax(1)


def confusion_records(evaluation: Evaluation) -> list[dict]:
    names = evaluation.classes
    return [
        {"actual": names[a], "predicted": names[p]}
        for a, p in zip(evaluation.labels, predicted_labels(evaluation.probs))
    ]


def curve_records(history: tuple[dict, ...] | list[dict]) -> list[dict]:
    """The training history in long form, one record per epoch, metric and split (epochs from 1)."""
    records = []
    for number, row in enumerate(history, 1):
        for metric in CURVE_METRICS:
            for prefix, split in SPLIT_NAMES.items():
                value = row.get(prefix + metric)
                if value is not None and value == value:
                    records.append(
                        {
                            "epoch": int(row.get("epoch", number)),
                            "metric": metric,
                            "split": split,
                            "value": round(float(value), DIGITS),
                        }
                    )
    return records


def sample_rows(n: int, count: int = GRID) -> list[int]:
    """`count` rows spread evenly over the validation split (which is ordered by class), so every class shows."""
    return sorted(set(np.linspace(0, n - 1, min(n, count)).round().astype(int).tolist())) if n else []


def worst_mistakes(evaluation: Evaluation, count: int = GRID) -> list[int]:
    """Rows of wrong predictions, most confident first (ties in row order, so the choice is stable)."""
    predicted = predicted_labels(evaluation.probs)
    wrong = np.flatnonzero(predicted != evaluation.labels)
    confidence = evaluation.probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count].tolist()


def _draw(fig, images: np.ndarray, rows: list[int], evaluation: Evaluation, title: str, show_truth: bool) -> None:
    predicted = predicted_labels(evaluation.probs)
    fig.suptitle(title, fontsize=11)
    grid_rows = max(1, -(-GRID // COLUMNS))
    axes = fig.subplots(grid_rows, COLUMNS, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    if not rows:
        axes[0].text(0, 0.5, "none", fontsize=12, transform=axes[0].transAxes)  # e.g. no mistake at all
    for ax, row in zip(axes, rows):
        img = images[row]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        guess, truth = int(predicted[row]), int(evaluation.labels[row])
        label = f"{evaluation.classes[guess]} {evaluation.probs[row, guess]:.2f}"
        if show_truth:
            label += f"\ntrue: {evaluation.classes[truth]}"
        ax.set_title(label, color=RIGHT if guess == truth else WRONG, fontsize=10)


def predictions_figure(evaluation: Evaluation, images: np.ndarray):
    """Seed 001's grid (blue = right, red = wrong) above a gallery of the most confident mistakes."""
    from matplotlib.figure import Figure  # the object API needs no display and no global pyplot state

    fig = Figure(figsize=(10, 9.5), dpi=100, layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    sample = sample_rows(len(evaluation.labels))
    _draw(
        top,
        images,
        sample,
        evaluation,
        "Validation sample: predicted class and probability (blue = right, red = wrong)",
        False,
    )
    mistakes = worst_mistakes(evaluation)
    wrong = int((predicted_labels(evaluation.probs) != evaluation.labels).sum())
    _draw(
        bottom,
        images,
        mistakes,
        evaluation,
        f"Most confident mistakes ({wrong} of {len(evaluation.labels)} wrong)",
        True,
    )
    return fig


def write_predictions_png(evaluation: Evaluation, images: np.ndarray, path: Path) -> None:
    png = io.BytesIO()
    predictions_figure(evaluation, images).savefig(
        png, format="png", metadata={"Software": None}
    )  # no version stamp: same bytes every run
    write_atomic(path, png.getvalue())


def write_plots(evaluation: Evaluation, images: np.ndarray, out: Path) -> list[Path]:
    """Every plot of one model into `out`; returns the paths written."""
    files = {
        THRESHOLDS: threshold_records(evaluation),
        ROC: roc_records(evaluation),
        CONFUSION: confusion_records(evaluation),
        CURVES: curve_records(evaluation.history),
    }
    for name, records in files.items():
        write_records(out / name, records)
    write_predictions_png(evaluation, images, out / PREDICTIONS)
    return [out / name for name in (*files, PREDICTIONS)]
