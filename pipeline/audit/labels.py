"""Label-issue candidates: validation items whose given label a trained model finds unlikely.

Confident learning (Northcutt et al., 2021) with cleanlab: the model never trained on the
validation split, so its probabilities there are out of sample, which confident learning needs.
`find_label_issues` flags the items; each is scored by cleanlab's label quality (the probability of
the given label, `self_confidence`), lowest (most likely wrong) first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.prepared import INDEX, load_split, read_meta


@dataclass(frozen=True)
class Ranking:
    order: np.ndarray  # validation rows, most likely mislabeled first (every row)
    scores: np.ndarray  # label quality per row, 0..1 (low = likely wrong)
    flagged: np.ndarray  # bool per row: cleanlab's find_label_issues flags it
    suggested: np.ndarray  # the model's class per row


def rank(labels: np.ndarray, probs: np.ndarray) -> Ranking:
    """Rank every item by cleanlab's label quality of its given label under `probs` (N, C)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    with warnings.catch_warnings():  # "too few examples in class k" on small splits: nothing to act on
        warnings.simplefilter("ignore")
        scores = get_label_quality_scores(labels, probs, method="self_confidence")
        one_class = len(np.unique(labels)) < 2  # nothing to confuse it with
        flagged = np.zeros(len(labels), bool) if one_class else find_label_issues(labels, probs, n_jobs=1)
    order = np.lexsort((np.arange(len(scores)), scores))  # lowest quality first; ties in row order
    return Ranking(order, scores, np.asarray(flagged, bool), probs.argmax(axis=1))


def label_issues(model_path: Path, data: Path) -> tuple[list[dict], np.ndarray]:
    """The flagged validation items of the prepared dataset `data` under the model at `model_path`,
    best candidate first: {"path", "given", "suggested", "score", "row"}; and the validation images
    (for thumbnails)."""
    from pipeline.train.runtime import load_model, predict_probs

    classes = read_meta(data)["classes"]
    x_val, y_val = load_split(data, "val")
    if not len(x_val):
        return [], x_val
    probs = predict_probs(load_model(model_path), x_val)
    if probs.shape[1] != len(classes):
        raise InputError(
            f"{model_path} predicts {probs.shape[1]} classes but {data} has {len(classes)}: retrain on this data"
        )
    index = pd.read_csv(data / INDEX, dtype={"path": str, "split": str}, keep_default_na=False)
    paths = index.loc[index["split"] == "val"].sort_values("row")["path"].tolist()
    ranking = rank(np.asarray(y_val), probs)
    issues = [
        {
            "path": paths[row],
            "given": classes[int(y_val[row])],
            "suggested": classes[int(ranking.suggested[row])],
            "score": round(float(ranking.scores[row]), 4),
            "row": int(row),
        }
        for row in ranking.order
        if ranking.flagged[row]
    ]
    return issues, x_val
