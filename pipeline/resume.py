"""Exact resume after an interruption: Keras' BackupAndRestore plus what it leaves out.

BackupAndRestore backs up the weights, the optimizer state and the epoch at every epoch end and
restores them when training starts again. A resumed run still would not end like an uninterrupted
one, because three things are missing from that backup:

- the state of the random layers' seed generators (augmentation, dropout);
- the per-epoch history (Keras' History only sees the epochs after the restart);
- what ModelCheckpoint and EarlyStopping have seen so far (their best value, patience count).

`Resume` keeps those in `state-<epoch>.json` beside Keras' files. Keras writes its own
`training_metadata.json` last, so the epoch it names is a complete backup; our state for that
epoch is written before it and kept until the next one is complete. The order of the training
data is a function of the epoch number (see `pipeline.train.epoch_order`), so it needs no state.

Imports Keras: import this module only where training happens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np

METADATA = "training_metadata.json"  # BackupAndRestore's own record of the last backed-up epoch
TRACKED_ATTRS = ("best", "wait", "best_epoch", "stopped_epoch")


def saved_epoch(backup_dir: Path) -> int:
    """The number of finished epochs a backup holds (0 when there is none)."""
    path = Path(backup_dir) / METADATA
    return int(json.loads(path.read_text())["epoch"]) if path.exists() else 0


def _state_path(backup_dir: Path, epoch: int) -> Path:
    return Path(backup_dir) / f"state-{epoch}.json"


def _random_states(model) -> list:
    """Variables that are not weights: the seed generators' states of random layers."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class Resume(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also restores random-layer seeds, the history and `tracked` callbacks'
    best-so-far. Put it last in the callback list: it snapshots what the others did this epoch."""

    def __init__(self, backup_dir: Path, tracked: list | tuple = ()):
        super().__init__(str(backup_dir))
        self.dir = Path(backup_dir)
        self.tracked = list(tracked)
        self.start_epoch = saved_epoch(self.dir)
        self._state = json.loads(_state_path(self.dir, self.start_epoch).read_text()) if self.start_epoch else {}
        self.history: list[dict[str, float]] = self._state.get("history", [])

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # weights, optimizer state, initial epoch
        if not self._state:
            return
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
            "callbacks": [{name: _plain(getattr(cb, name)) for name in TRACKED_ATTRS if hasattr(cb, name)} for cb in self.tracked],
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        path = _state_path(self.dir, epoch + 1)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
        super().on_epoch_end(epoch, logs)  # weights, then metadata: the backup of epoch + 1 is complete
        previous = _state_path(self.dir, epoch)
        if previous.exists():
            previous.unlink()


def _plain(value):
    """JSON-able: NumPy scalars to Python numbers (None and infinities pass through)."""
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return np.asarray(value).item()
