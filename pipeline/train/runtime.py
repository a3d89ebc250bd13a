"""The Keras runtime shared by training, evaluation and prediction.

TensorFlow bootstrap (quiet, seeded, deterministic), the model folder's layout, the output head and
its targets, tf.data over memory-mapped arrays, loading a saved model and predicting class
probabilities. Nothing here trains: `evaluate` and `predict` import this module, never the loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError
from pipeline.train.models.common import Head

# A model folder (`models/<arch>/`):
MODEL_FILE = "model.keras"  # the model after the last epoch
BEST_FILE = "best.keras"  # the epoch with the lowest validation loss (training loss without a val split)
HISTORY_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"


def tensorflow():
    """TensorFlow, imported with its C++ logging at warnings and above (unless the user chose)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def keras_seeded(seed: int):
    """Import Keras with TensorFlow quiet, seeded and deterministic (same params -> same bytes)."""
    tf = tensorflow()
    import keras

    import pipeline.train.models.layers  # noqa: F401  (registers custom layers, so saved models load)

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return keras


def head_for(n_classes: int, kind: str) -> Head:
    """One sigmoid unit for two classes (seed 000) unless `kind` is softmax; softmax otherwise."""
    if n_classes == 2 and kind == "sigmoid":
        return Head(1, "sigmoid")
    return Head(n_classes, "softmax")


def targets(labels: np.ndarray, head: Head) -> np.ndarray:
    """Labels as the head's targets: (N, 1) for one sigmoid unit, one-hot for softmax."""
    if head.units == 1:
        return labels.astype(np.float32)[:, None]
    return np.eye(head.units, dtype=np.float32)[labels]


def gathered(index_batches, x: np.ndarray, labels: np.ndarray, head: Head):
    """Map batches of indices to (images, targets) batches, each gathered from the memory map in one
    call; the integer `labels` become the head's targets per batch."""
    tf = tensorflow()

    def gather(idx: np.ndarray):
        idx = np.sort(idx)  # ascending reads from the memory map
        return np.ascontiguousarray(x[idx]), targets(labels[idx], head)

    def fetch(idx):
        images, y = tf.numpy_function(gather, [idx], [tf.as_dtype(x.dtype), tf.float32], stateful=False)
        return tf.ensure_shape(images, (None, *x.shape[1:])), tf.ensure_shape(y, (None, head.units))

    ds = index_batches.map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def in_order(x: np.ndarray, labels: np.ndarray, head: Head, batch_size: int):
    """(images, targets) batches of `x` in row order: validation and prediction."""
    return gathered(tensorflow().data.Dataset.range(len(x)).batch(batch_size), x, labels, head)


def load_model(model_path: Path):
    if not model_path.exists():
        raise InputError(f"model not found: {model_path} (run `pipeline train` first)")
    keras = keras_seeded(0)
    return keras.models.load_model(model_path)


def predict_probs(model, x: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) of uint8 images; a single sigmoid unit becomes [1 - p, p]."""
    units = model.output_shape[-1]
    head = Head(units, "sigmoid" if units == 1 else "softmax")
    probs = model.predict(in_order(x, np.zeros(len(x), dtype=np.int64), head, 256), verbose=0).astype(np.float64)
    return np.concatenate([1 - probs, probs], axis=1) if units == 1 else probs
