"""train input: the CNN at 94x125 fed by pipeline's tf.data over the memory map vs from in-memory tensors.

The in-memory feed is the model-only bound: the input pipeline is fast enough when training through
it reaches >= 0.9 of that rate. Both feed the same model in one process, an epoch each in turn, and
the ratio is the median over turns of pipeline / memory within a turn: this shared machine's speed
for this model drifts between modes (about 40, 60 and 85 images/s) that last longer than a turn, so
a ratio of neighbours holds where a ratio of separate bests does not. The first turn builds the
graphs and is not timed.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.corpus import make_corpus
from benchmarks.measure import measure
from benchmarks.prepare import ours as prepare_ours

BATCH = 32


def fit_rates(data: Path, turns: int) -> dict[str, float]:
    """Median images per second of an epoch of `fit` with the default cnn per feed, and the median
    pipeline / memory ratio within a turn, over `turns` timed turns."""
    from pipeline.core.prepared import load_split
    from pipeline.train.loop import training_dataset
    from pipeline.train.models import build_model
    from pipeline.train.models.cnn import CnnParams
    from pipeline.train.models.common import Head
    from pipeline.train.runtime import keras_seeded, targets

    keras = keras_seeded(0)
    import tensorflow as tf

    x, labels = load_split(data, "train")
    head = Head(1, "sigmoid")
    in_memory = (tf.constant(np.asarray(x)), tf.constant(targets(labels, head)))
    feeds = {
        "memory": tf.data.Dataset.from_tensor_slices(in_memory).batch(BATCH).repeat().prefetch(tf.data.AUTOTUNE),
        "pipeline": training_dataset(x, labels, head, BATCH, seed=0, first_epoch=0, epochs=1),
    }
    model = build_model("cnn", x.shape[1:], head, CnnParams())
    model.compile(keras.optimizers.Adam(3e-4), "mse")
    steps = math.ceil(len(x) / BATCH)
    rates: dict[str, list[float]] = {name: [] for name in feeds}
    for turn in range(turns + 1):
        for name, ds in feeds.items():
            start = time.perf_counter()
            model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
            if turn:
                rates[name].append(len(x) / (time.perf_counter() - start))
    ratio = statistics.median(p / m for p, m in zip(rates["pipeline"], rates["memory"]))
    return {**{name: statistics.median(r) for name, r in rates.items()}, "ratio": ratio}


def run(work: Path, n: int, rounds: int) -> list[dict]:
    n = max(40, n // 25)  # 400 images for the full run: the 46M-weight dense layer is slow on CPU
    root = work.parent / f"corpus-{n}"
    make_corpus(root, n)
    data = work / "prepared"
    prepare_ours(root, data)
    m = measure(fit_rates, data, 2 * rounds)  # epochs are short: two turns a round
    bound, mine, ratio = m["result"]["memory"], m["result"]["pipeline"], m["result"]["ratio"]
    return [
        {
            "case": "train_input",
            "measure": f"cnn 94x125 from in-memory tensors ({int(n * 0.8)} images)",
            "rate": bound,
            "unit": "images/s",
            "ratio": 1.0,
            "target": "",
            "peak_rss_mb": m["peak_rss_mb"],
        },
        {
            "case": "train_input",
            "measure": "cnn 94x125 through pipeline's tf.data over the memmap",
            "rate": mine,
            "unit": "images/s",
            "ratio": ratio,
            "target": ">= 0.9 of bound",
            "peak_rss_mb": m["peak_rss_mb"],
        },
    ]
