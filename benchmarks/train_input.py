"""train input: the CNN at 94x125 fed by pipeline's tf.data over the memory map vs from in-memory tensors.

The in-memory feed is the model-only bound: the input pipeline is fast enough when training through
it reaches >= 0.9 of that rate. Both feed the same model in one process, an epoch each in turn, so a
slow spell of this shared machine (or a slow process: rates here come in two modes, about 2x apart,
from one process to the next) weighs on both alike; the first turn builds the graphs and is not timed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from benchmarks.corpus import make_corpus
from benchmarks.measure import measure
from benchmarks.prepare import ours as prepare_ours

BATCH = 32


def fit_rates(data: Path, rounds: int) -> dict[str, float]:
    """Best images per second of an epoch of `fit` with the default cnn, per feed, over `rounds` turns."""
    from pipeline.models import build_model
    from pipeline.models.cnn import CnnParams
    from pipeline.models.common import Head
    from pipeline.train import keras_seeded, load_split, targets, training_dataset

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
    best = dict.fromkeys(feeds, 0.0)
    for turn in range(rounds + 1):
        for name, ds in feeds.items():
            start = time.perf_counter()
            model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
            if turn:
                best[name] = max(best[name], len(x) / (time.perf_counter() - start))
    return best


def run(work: Path, n: int, rounds: int) -> list[dict]:
    n = max(40, n // 25)  # 400 images for the full run: the 46M-weight dense layer is slow on CPU
    root = work.parent / f"corpus-{n}"
    make_corpus(root, n)
    data = work / "prepared"
    prepare_ours(root, data)
    m = measure(fit_rates, data, rounds)
    bound, mine = m["result"]["memory"], m["result"]["pipeline"]
    return [
        {"case": "train_input", "measure": f"cnn 94x125 from in-memory tensors ({int(n * 0.8)} images)", "rate": bound, "unit": "images/s", "ratio": 1.0, "target": "", "peak_rss_mb": m["peak_rss_mb"]},
        {"case": "train_input", "measure": "cnn 94x125 through pipeline's tf.data over the memmap", "rate": mine, "unit": "images/s", "ratio": mine / bound, "target": ">= 0.9 of bound", "peak_rss_mb": m["peak_rss_mb"]},
    ]
