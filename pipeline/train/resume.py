"""Exact resume after an interruption: a backup of every finished epoch that a kill cannot corrupt.

Keras' BackupAndRestore writes its weights file in place, so a process killed while writing it
leaves a truncated HDF5 file that no rerun can load. It also leaves out what an exact resume needs:

- the state of the random layers' seed generators (augmentation, dropout);
- the per-epoch history (Keras' History only sees the epochs after the restart);
- what ModelCheckpoint and EarlyStopping have seen so far (their best value, patience count).

`Resume` keeps, per finished epoch n, `epoch-<n>.weights.h5` (weights and optimizer state) and
`state-<n>.json` (the rest), each written to a temporary name and renamed; `epoch.json` names the
last complete epoch and is replaced last, so whatever instant a kill lands on, it names a complete
backup. The files of epoch n - 1 are deleted only after that. The order of the training data is a
function of the epoch number (see `pipeline.train.loop.epoch_order`), so it needs no state.

Imports Keras: import this module only where training happens.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from pipeline.core.checkpoint import checkpoint
from pipeline.core.files import write_atomic

POINTER = "epoch.json"  # {"epoch": n}: the last finished epoch with a complete backup
TRACKED_ATTRS = ("best", "wait", "best_epoch", "stopped_epoch")


def saved_epoch(backup_dir: Path) -> int:
    """The number of finished epochs a backup holds (0 when there is none)."""
    path = Path(backup_dir) / POINTER
    return int(json.loads(path.read_text())["epoch"]) if path.exists() else 0


def _files(backup_dir: Path, epoch: int) -> tuple[Path, Path]:
    return Path(backup_dir) / f"epoch-{epoch}.weights.h5", Path(backup_dir) / f"state-{epoch}.json"


def _random_states(model) -> list:
    """Variables that are not weights: the seed generators' states of random layers."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class Resume(keras.callbacks.Callback):
    """Backs up each finished epoch; restores the last one when training starts again: weights,
    optimizer state, random-layer seeds, the history and `tracked` callbacks' best-so-far. Pass
    `start_epoch` as `fit(initial_epoch=...)`. Put it last in the callback list: it snapshots what
    the others did this epoch."""

    def __init__(self, backup_dir: Path, tracked: list | tuple = ()):
        super().__init__()
        self.dir = Path(backup_dir)
        self.tracked = list(tracked)
        self.start_epoch = saved_epoch(self.dir)
        self._state = json.loads(_files(self.dir, self.start_epoch)[1].read_text()) if self.start_epoch else {}
        self.history: list[dict[str, float]] = self._state.get("history", [])

    def on_train_begin(self, logs=None):
        if not self._state:
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:  # its variables must exist to be loaded
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(_files(self.dir, self.start_epoch)[0])
        for variable, value in zip(_random_states(self.model), self._state["random"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        for callback, attrs in zip(self.tracked, self._state["callbacks"]):
            for name, value in attrs.items():
                setattr(callback, name, value)

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({"epoch": epoch + 1, **{name: float(value) for name, value in (logs or {}).items()}})
        state = {
            "history": self.history,
            "random": [np.asarray(v.numpy()).tolist() for v in _random_states(self.model)],
            "callbacks": [
                {name: _plain(getattr(cb, name)) for name in TRACKED_ATTRS if hasattr(cb, name)} for cb in self.tracked
            ],
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        weights, state_path = _files(self.dir, epoch + 1)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".weights.h5")  # Keras wants that suffix
        os.close(fd)
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, weights)
        write_atomic(state_path, json.dumps(state).encode())
        write_atomic(
            self.dir / POINTER, json.dumps({"epoch": epoch + 1}).encode()
        )  # the backup of epoch + 1 is complete
        for path in _files(self.dir, epoch):
            path.unlink(missing_ok=True)
        checkpoint("train.epoch")


def _plain(value):
    """JSON-able: NumPy scalars to Python numbers (None and infinities pass through)."""
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return np.asarray(value).item()
