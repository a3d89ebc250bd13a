"""Train one architecture on prepared arrays: seeded, deterministic, fed by tf.data from memory maps."""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import TrainSettings
from pipeline.console import console
from pipeline.models import ARCHITECTURES
from pipeline.models.common import ArchParams, Head
from pipeline.prepare import read_meta

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"


@dataclass(frozen=True)
class Trained:
    model_path: Path
    params: int
    history: dict[str, list[float]]
    train_seconds: float
    peak_rss_mb: float


def keras_seeded(seed: int):
    """Import Keras with TensorFlow quiet, seeded and deterministic (same params -> same bytes)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return keras


def head_for(n_classes: int, settings: TrainSettings) -> Head:
    """One sigmoid unit for two classes (seed 000) unless softmax is asked for; softmax otherwise."""
    if n_classes == 2 and settings.head == "sigmoid":
        return Head(1, "sigmoid")
    return Head(n_classes, "softmax")


def targets(labels: np.ndarray, head: Head) -> np.ndarray:
    """Labels as the head's targets: (N, 1) for one sigmoid unit, one-hot for softmax."""
    if head.units == 1:
        return labels.astype(np.float32)[:, None]
    return np.eye(head.units, dtype=np.float32)[labels]


def load_split(data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images memory-mapped (never copied whole into RAM) and labels of one split."""
    return np.load(data / f"{split}_x.npy", mmap_mode="r"), np.load(data / f"{split}_y.npy")


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None):
    """tf.data over index batches; each batch is gathered from the memory map in one NumPy call."""
    import tensorflow as tf

    ds = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(idx: np.ndarray):
        idx = np.sort(idx)  # ascending reads from the memory map
        return np.ascontiguousarray(x[idx]), y[idx]

    def fetch(idx):
        images, labels = tf.numpy_function(gather, [idx], [tf.uint8, tf.float32])
        return tf.ensure_shape(images, (None, *x.shape[1:])), tf.ensure_shape(labels, (None, *y.shape[1:]))

    return ds.batch(batch_size).map(fetch).prefetch(tf.data.AUTOTUNE)


def build_model(arch: str, input_shape: tuple[int, int, int], head: Head, params: ArchParams):
    return ARCHITECTURES[arch].build(tuple(input_shape), head, params)


def _optimizer(keras, settings: TrainSettings):
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(settings.learning_rate, momentum=0.9)
    return keras.optimizers.Adam(settings.learning_rate)


def train(arch: str, data: Path, out: Path, settings: TrainSettings, params: ArchParams) -> Trained:
    """Fit `arch` on `data`'s train split (validating on val); save the model and per-epoch history."""
    meta = read_meta(data)
    keras = keras_seeded(settings.seed)
    head = head_for(len(meta["classes"]), settings)
    x_train, y_train = load_split(data, "train")
    x_val, y_val = load_split(data, "val")
    train_ds = make_dataset(x_train, targets(y_train, head), settings.batch_size, shuffle_seed=settings.seed)
    val_ds = make_dataset(x_val, targets(y_val, head), settings.batch_size) if len(x_val) else None

    model = build_model(arch, meta["input_shape"], head, params)
    accuracy = keras.metrics.BinaryAccuracy(name="accuracy") if head.units == 1 else keras.metrics.CategoricalAccuracy(name="accuracy")
    model.compile(optimizer=_optimizer(keras, settings), loss=settings.loss, metrics=[accuracy])

    start = time.perf_counter()
    fit = model.fit(train_ds, validation_data=val_ds, epochs=settings.epochs, shuffle=False, verbose=1 if console.is_terminal else 0)
    seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    history = {name: [float(v) for v in values] for name, values in fit.history.items()}
    frame = pd.DataFrame({"epoch": range(1, settings.epochs + 1), **history})
    frame.to_csv(out / HISTORY_FILE, index=False, lineterminator="\n")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Trained(out / MODEL_FILE, model.count_params(), history, seconds, peak_rss_mb)


def write_run_file(path: Path, trained: Trained) -> None:
    """Figures that vary from run to run, kept apart from the deterministic quality metrics."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"train_seconds": round(trained.train_seconds, 3), "peak_rss_mb": round(trained.peak_rss_mb, 1)}
    path.write_text(json.dumps(run, indent=2) + "\n")
