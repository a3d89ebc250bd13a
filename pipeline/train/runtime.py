"""The Keras runtime shared by training, evaluation and prediction.

TensorFlow bootstrap (quiet, seeded, deterministic), the model folder's layout, the output head and
its targets, tf.data over memory-mapped arrays, loading a saved model and predicting class
probabilities. Nothing here trains: `evaluate` and `predict` import this module, never the loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.files import atomic_file
from pipeline.train.models.common import Head

# A model folder (`models/<arch>/`):
MODEL_FILE = "model.keras"  # the model after the last epoch
BEST_FILE = "best.keras"  # the epoch with the lowest validation loss (training loss without a val split)
HISTORY_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"


# TensorFlow's C++ log lines (absl): severity letter and MMDD, time, thread id, file:line] message.
_LOG_RECORD = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]\s]+\] (.*)")
# absl's notice that it logs to stderr until initialised: it announces the lines filtered here.
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
QUIET_LEVEL = 2  # TF_CPP_MIN_LOG_LEVEL when the user sets none: errors only (0 = all, 1 = warnings up, 3 = none)


def nvidia_gpu_present() -> bool:
    """Whether the machine exposes an NVIDIA GPU (the driver's device nodes or proc entry, or WSL's
    GPU device), asked of the system, not of TensorFlow. Only decides which log lines are noise: it
    never hides a device from TensorFlow."""
    return any(Path(p).exists() for p in ("/proc/driver/nvidia/gpus", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))


def is_noise(line: str, min_level: int, drop_cuda_probe: bool) -> bool:
    """A line TensorFlow prints while it loads that the level asked for hides: TensorFlow's C++
    logging prints records below TF_CPP_MIN_LOG_LEVEL until absl is initialised (oneDNN and
    CUDA-stub notes at every start), and, with `drop_cuda_probe`, the error it logs when it probes
    for CUDA on a machine without an NVIDIA GPU ("failed call to cuInit: ... (303)")."""
    if line.startswith(_ABSL_NOTICE):
        return min_level > 0
    record = _LOG_RECORD.match(line)
    if record is None:
        return False  # not TensorFlow's C++ logging (e.g. a Python warning): always shown
    return "IWEF".index(record[1]) < min_level or (drop_cuda_probe and "cuInit" in record[2])


@contextlib.contextmanager
def _stderr_filtered(noise):
    """Capture file descriptor 2 (where TensorFlow's C++ code writes) and pass on the lines that are
    not `noise` when the block ends. A file, not a pipe: nothing can block on a full buffer."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().decode(errors="replace").splitlines(keepends=True) if not noise(line)
            ]
            if kept:
                os.write(2, "".join(kept).encode())


def tensorflow():
    """TensorFlow, imported quietly: its C++ logs at TF_CPP_MIN_LOG_LEVEL (errors only unless the
    user set it), including the lines it prints before it reads that level, and without the CUDA
    probe's error on a machine that has no NVIDIA GPU. A GPU, when there is one, is used as always."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    chosen = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    level = int(chosen) if chosen in {"0", "1", "2", "3"} else QUIET_LEVEL
    if chosen is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(QUIET_LEVEL)
    drop_cuda_probe = chosen is None and not nvidia_gpu_present()
    with _stderr_filtered(lambda line: is_noise(line, level, drop_cuda_probe)):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # loads the GPU platform now, inside the filter (it probes CUDA)
    return tf


def keras_seeded(seed: int, deterministic: bool = True):
    """Import Keras with TensorFlow quiet, a fresh Keras session, seeded and, unless
    `deterministic` is False, with TensorFlow's op determinism (same params -> same bytes). The
    fresh session restarts Keras' layer-name counters: a model built after another in the same
    process (`pipeline train` of several architectures, or a test) is named, and so saved, exactly
    as in a process of its own. Keras will not compile with XLA while op determinism is on, so a
    run with `train.jit_compile` turns it off."""
    tf = tensorflow()
    import keras
    from tensorflow.python.framework import config as tf_config  # (its public API can only turn determinism on)

    import pipeline.train.models.layers  # noqa: F401  (registers custom layers, so saved models load)

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
    return keras


ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry (Keras' own for its first members)
_SAVE_DATE = "date_saved"  # in a .keras file's metadata.json: the wall-clock time of the save
_SHARED_ID = "shared_object_id"  # in its config.json: id() of an object several layers share


def save_model(model, path: Path) -> None:
    """`model.save(path)`, with the same bytes for the same model. Keras stamps the weights member of
    the zip and metadata.json with the time of the save, and names objects that layers share by
    their memory address in config.json, so the file is rewritten: fixed member times, no save date
    (nothing reads it back), shared objects numbered in order. Atomic, like every output."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # Keras wants the .keras suffix
    model.save(tmp)
    try:
        rewrite_keras_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _renumber_shared(config, numbers: dict) -> None:
    """Replace each `shared_object_id` (Keras writes the object's id(), a memory address) by its
    order of first appearance; equal ids stay equal, so loading shares the same objects."""
    if isinstance(config, dict):
        if _SHARED_ID in config:
            config[_SHARED_ID] = numbers.setdefault(config[_SHARED_ID], len(numbers) + 1)
        for value in config.values():
            _renumber_shared(value, numbers)
    elif isinstance(config, list):
        for value in config:
            _renumber_shared(value, numbers)


def rewrite_keras_file(src: Path, dst: Path) -> None:
    """Copy the .keras zip `src` to `dst` member by member (streamed: the weights can be large),
    each with the fixed time ZIP_TIME and its own compression; metadata.json loses its save date and
    config.json's shared-object ids are renumbered."""
    import json
    import shutil
    import zipfile

    with zipfile.ZipFile(src) as zin, atomic_file(dst) as fh, zipfile.ZipFile(fh, "w") as zout:
        for member in zin.infolist():
            info = zipfile.ZipInfo(member.filename, date_time=ZIP_TIME)
            info.compress_type, info.external_attr, info.file_size = (
                member.compress_type,
                member.external_attr,
                member.file_size,
            )
            if member.filename in ("metadata.json", "config.json"):
                content = json.loads(zin.read(member))
                if member.filename == "metadata.json":
                    content.pop(_SAVE_DATE, None)
                else:
                    _renumber_shared(content, {})
                zout.writestr(info, json.dumps(content))
                continue
            with zin.open(member) as data, zout.open(info, "w") as out:
                shutil.copyfileobj(data, out, 1 << 20)


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
    """A saved model for inference: without its optimizer (`compile=False`), which evaluation and
    prediction do not use (and a mixed-precision run's loss-scale optimizer would not restore into a
    float32 one: Keras warns and skips it)."""
    if not model_path.exists():
        raise InputError(f"model not found: {model_path} (run `pipeline train` first)")
    keras = keras_seeded(0)
    return keras.models.load_model(model_path, compile=False)


def predict_probs(model, x: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) of uint8 images; a single sigmoid unit becomes [1 - p, p]."""
    units = model.output_shape[-1]
    head = Head(units, "sigmoid" if units == 1 else "softmax")
    probs = model.predict(in_order(x, np.zeros(len(x), dtype=np.int64), head, 256), verbose=0).astype(np.float64)
    return np.concatenate([1 - probs, probs], axis=1) if units == 1 else probs
