"""An evaluated model: the record `evaluate` makes and `plots` draws, and what both compute from.

Its own module so the two import it, not each other: `evaluate` (metrics, and the stage that writes
them with the plots) imports `plots`, which needs no Keras and nothing else of `evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGITS = 6  # metrics and plot records are rounded to this many decimals, so files are stable


@dataclass(frozen=True)
class Evaluation:
    """A model's metrics plus what the plots need: the labels and the model's probabilities."""

    metrics: dict
    classes: list[str]
    labels: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, classes): probability of each class (a sigmoid unit expanded to 2 columns)
    n_thresholds: int
    history: tuple[dict, ...] = ()  # the training history's rows (epoch, loss, accuracy, val_loss, ...), if found


def thresholds(n: int) -> np.ndarray:
    """The centres of n equal bins of [0, 1]: 0.05, 0.15, ..., 0.95 for n = 10."""
    return (np.arange(n) + 0.5) / n


def threshold_sweep(labels: np.ndarray, prob: np.ndarray, n_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, accuracy of `prob > t` at each): seed 000's sweep, also drawn as a plot."""
    cuts = thresholds(n_thresholds)
    truth = labels == 1
    return cuts, np.array([((prob > t) == truth).mean() for t in cuts])


def positive_prob(probs: np.ndarray) -> np.ndarray:
    """The probability of class 1 of a two-class model (last column)."""
    return probs[:, -1]
