"""train input: the CNN at 94x125 fed by pipeline's tf.data over the memory map vs from in-memory tensors.

The in-memory run is the model-only bound: the input pipeline is fast enough when training through
it reaches >= 0.9 of that rate. Epochs after the first (graph building) are timed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from benchmarks.corpus import make_corpus
from benchmarks.measure import best_of
from benchmarks.prepare import ours as prepare_ours

BATCH = 32
EPOCHS = 3


def fit_rate(data: Path, feed: str) -> float:
    """Images per second over epochs 2..EPOCHS of `fit` with the default cnn."""
    from pipeline.models import build_model
    from pipeline.models.cnn import CnnParams
    from pipeline.models.common import Head
    from pipeline.train import keras_seeded, load_split, targets, training_dataset

    keras = keras_seeded(0)
    import tensorflow as tf

    x, labels = load_split(data, "train")
    head = Head(1, "sigmoid")
    if feed == "pipeline":
        ds = training_dataset(x, labels, head, BATCH, seed=0, first_epoch=0, epochs=EPOCHS)
    else:
        in_memory = (tf.constant(np.asarray(x)), tf.constant(targets(labels, head)))
        ds = tf.data.Dataset.from_tensor_slices(in_memory).batch(BATCH).repeat().prefetch(tf.data.AUTOTUNE)
    model = build_model("cnn", x.shape[1:], head, CnnParams())
    model.compile(keras.optimizers.Adam(3e-4), "mse")
    marks: list[float] = []
    clock = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: marks.append(time.perf_counter()))
    model.fit(ds, epochs=EPOCHS, steps_per_epoch=math.ceil(len(x) / BATCH), callbacks=[clock], verbose=0)
    seconds = time.perf_counter() - marks[1]
    return len(x) * (EPOCHS - 1) / seconds


def run(work: Path, n: int, rounds: int) -> list[dict]:
    n = max(40, n // 25)  # 400 images for the full run: the 46M-weight dense layer is slow on CPU
    root = work.parent / f"corpus-{n}"
    make_corpus(root, n)
    data = work / "prepared"
    prepare_ours(root, data)
    best = best_of(rounds, {"memory": (fit_rate, data, "memory"), "pipeline": (fit_rate, data, "pipeline")}, key=lambda m: -m["result"])
    bound, mine = best["memory"], best["pipeline"]
    return [
        {"case": "train_input", "measure": f"cnn 94x125 from in-memory tensors ({int(n * 0.8)} images)", "rate": bound["result"], "unit": "images/s", "ratio": 1.0, "target": "", "peak_rss_mb": bound["peak_rss_mb"]},
        {"case": "train_input", "measure": "cnn 94x125 through pipeline's tf.data over the memmap", "rate": mine["result"], "unit": "images/s", "ratio": mine["result"] / bound["result"], "target": ">= 0.9 of bound", "peak_rss_mb": mine["peak_rss_mb"]},
    ]
