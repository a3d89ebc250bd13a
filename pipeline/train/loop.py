"""Train one architecture on prepared arrays: deterministic, resumable, on whatever hardware is there.

- Input: tf.data over the memory-mapped uint8 arrays, one NumPy gather per batch (no copy of the
  dataset in RAM); the order of each epoch is a seeded permutation of that epoch's number, so a
  resumed run sees the same batches as an uninterrupted one. In the shard layout the epoch reads a
  few shards at a time, interleaved (`sharded_epoch_order`), still a function of (seed, epoch).
- In the graph: augmentation (training only) and normalisation (`pipeline.train.models.common`).
- Callbacks: ModelCheckpoint (best model), EarlyStopping (optional), TensorBoard, dvclive, and
  `Resume` (crash-safe per-epoch backups for an exact resume) last.
- Outputs: the model folder holds only what is the same for the same params (the .keras files are
  saved with fixed zip times); TensorBoard's event files (named after the time, host and process)
  and the run's time and memory go to `runs/<arch>/`, which git ignores and no stage declares.
- Hardware: TensorFlow's default device placement (a GPU when there is one), mixed precision and
  XLA as options, tf.distribute strategies for several GPUs or several machines.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.console import console
from pipeline.core.errors import ConfigError, DataError, InputError
from pipeline.core.files import exclusive, write_json, write_text
from pipeline.core.prepared import ShardedRows, load_split, read_meta
from pipeline.train.models import build_model
from pipeline.train.models.common import Head, Preprocess
from pipeline.train.runtime import (
    BEST_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    gathered,
    head_for,
    in_order,
    keras_seeded,
    rewrite_keras_file,
    save_model,
    targets,
    tensorflow,
)
from pipeline.train.settings import ArchParams, TrainSettings

BACKUP_DIR = ".backup"  # beside the model folder, not in it: DVC deletes a stage's outputs before rerunning it


@dataclass(frozen=True)
class Trained:
    model_path: Path
    params: int
    history: dict[str, list[float]]
    train_seconds: float
    peak_rss_mb: float
    resumed_from: int = 0  # epochs restored from an interrupted run's backup
    chief: bool = True  # False on the other workers of a multi-worker run (they write no outputs)
    replicas: int = 1
    mixed_precision: bool = False


@dataclass(frozen=True)
class Run:
    """One training run as `train` settles it, for `_fit`: what to train on what, on which devices, and
    where the outputs go (on the other workers of a multi-worker run: throwaway folders)."""

    arch: str
    data: Path  # the prepared data
    meta: dict  # its meta.json
    settings: TrainSettings
    params: ArchParams
    head: Head
    strategy: object  # the tf.distribute strategy (`distribution`)
    chief: bool  # only the chief writes outputs
    mixed: bool  # mixed precision
    out: Path  # the model folder
    backup: Path  # the per-epoch backup an interrupted run resumes from
    scratch: Path | None  # a non-chief worker's throwaway folder, deleted at the end
    live_dir: Path | None
    tensorboard_dir: Path | None
    run_file: Path | None


def peak_rss_mb() -> float:
    """This process's peak RSS. On Linux from VmHWM: ru_maxrss survives fork and exec there, so a
    process started by a bigger one (DVC, a benchmark) would report its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_STRATEGIES: dict[str, object] = {}


def distribution(name: str):
    """The tf.distribute strategy for `train.strategy`, made once per process (a multi-worker
    strategy must exist before any other TensorFlow op runs).

    auto: MirroredStrategy over the local GPUs when there are several, else TensorFlow's default
    (one GPU when present, else the CPU); mirrored: MirroredStrategy over the GPUs, or over the
    logical CPU devices when there is no GPU; multi_worker: MultiWorkerMirroredStrategy, its
    cluster read from TF_CONFIG.
    """
    if name == "multi_worker" and not os.environ.get("TF_CONFIG"):
        raise ConfigError("train.strategy: multi_worker needs TF_CONFIG (the cluster and this task) in the environment")
    if name not in _STRATEGIES:
        tf = tensorflow()
        if name == "multi_worker":
            _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
            if name == "mirrored":
                _STRATEGIES[name] = tf.distribute.MirroredStrategy(
                    gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
                )
            elif len(gpus) > 1:
                _STRATEGIES[name] = tf.distribute.MirroredStrategy(gpus)
            else:
                _STRATEGIES[name] = tf.distribute.get_strategy()
    return _STRATEGIES[name]


def task(strategy) -> tuple[bool, str]:
    """(is this the chief, a name for this task). Only the chief writes outputs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    kind, index = resolver.task_type, resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief), f"{kind}-{index}"


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training examples in `epoch`: depends on nothing but (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


INTERLEAVE = 4  # shards read at the same time in the shard layout (their pages are the working set)


def sharded_epoch_order(counts: list[int], seed: int, epoch: int, cycle: int = INTERLEAVE) -> np.ndarray:
    """The order of the training examples in `epoch` of the shard layout (rows numbered as the
    shards concatenated), a function of (counts, seed, epoch) alone, whatever the parallelism.

    The shards in a permutation seeded by (seed, epoch), the rows of shard s in a permutation seeded
    by (seed, epoch, s); then `cycle` shards are read at a time, interleaved one row each in turn,
    as tf.data's `interleave(cycle_length=cycle, block_length=1)`: each shard of the epoch's order
    takes the lane that finishes first (ties to the lowest lane), and lanes take turns row by row.
    """
    offsets = np.cumsum([0, *counts])
    lanes: list[list[np.ndarray]] = [[] for _ in range(max(1, min(cycle, len(counts))))]
    filled = [0] * len(lanes)
    for shard in np.random.default_rng([seed, epoch]).permutation(len(counts)):
        lane = int(np.argmin(filled))
        lanes[lane].append(offsets[shard] + np.random.default_rng([seed, epoch, int(shard)]).permutation(counts[shard]))
        filled[lane] += counts[shard]
    rows = [np.concatenate(lane) if lane else np.zeros(0, np.int64) for lane in lanes]
    keys = np.concatenate([np.arange(len(r), dtype=np.int64) * len(lanes) + k for k, r in enumerate(rows)])
    return np.concatenate(rows).astype(np.int64)[np.argsort(keys, kind="stable")]


def training_dataset(
    x: np.ndarray | ShardedRows,
    labels: np.ndarray,
    head: Head,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
):
    """Epochs `first_epoch` .. `epochs - 1` back to back, each in its own seeded order (`epoch_order`,
    or `sharded_epoch_order` for the shard layout's `ShardedRows`); use with
    `steps_per_epoch = ceil(len(x) / batch_size)`."""
    import tensorflow as tf

    n = len(x)
    counts = x.counts if isinstance(x, ShardedRows) else None

    def order(epoch):
        return epoch_order(n, seed, int(epoch)) if counts is None else sharded_epoch_order(counts, seed, int(epoch))

    def epoch_batches(epoch):
        idx = tf.numpy_function(order, [epoch], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(idx, (n,))).batch(batch_size)

    return gathered(tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches), x, labels, head)


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, streamed from the memory map."""
    total = np.zeros(x.shape[-1])
    squares = np.zeros(x.shape[-1])
    for start in range(0, len(x), chunk):
        block = np.asarray(x[start : start + chunk], dtype=np.float64).reshape(-1, x.shape[-1])
        total += block.sum(0)
        squares += (block * block).sum(0)
    count = len(x) * math.prod(x.shape[1:-1])
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return tuple(float(v) for v in mean), tuple(float(max(v, 1.0)) for v in std)


def _optimizer(keras, settings: TrainSettings):
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(settings.learning_rate, momentum=settings.momentum)
    return keras.optimizers.Adam(settings.learning_rate)


def _fingerprint(arch: str, settings: TrainSettings, params: ArchParams, data: Path, meta: dict, replicas: int) -> str:
    """What a backup must match to be resumed from: the same model, settings, data and devices."""
    files = {p.relative_to(data).as_posix(): p.stat().st_size for p in sorted(data.rglob("*.npy"))}  # (shards/ too)
    blob = {
        "arch": arch,
        "settings": settings.model_dump(mode="json"),
        "params": params.model_dump(mode="json"),
        "meta": meta,
        "files": files,
        "replicas": replicas,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _claim_backup(backup: Path, fingerprint: str) -> None:
    """Keep a backup made with the same fingerprint; discard any other."""
    stamp = backup / "fingerprint"
    if backup.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        console.print(f"note: discarding {backup}: it was made with other settings or data")
        shutil.rmtree(backup)
    backup.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def default_backup_dir(out: Path) -> Path:
    return out.parent / BACKUP_DIR / out.name


def _live_callback(live_dir: Path, history: list[dict[str, float]]):
    """dvclive's Keras callback on a fresh log in `live_dir`, replaying the epochs a resumed run
    restored, so the log always holds every epoch once."""
    from dvclive.keras import DVCLiveCallback
    from dvclive.utils import standardize_metric_name
    from scmrepo.exceptions import SCMError

    from dvclive import Live

    class FileLive(Live):
        """dvclive writing its files only (dvc.yaml declares them; no experiment saving, no
        dvc.yaml of its own). dvclive 3.49 asks git for HEAD before checking that the repository
        has a commit, so `git init && dvc init && dvc repro` would crash; there its git and DVC
        integration, which we do not use, is left off."""

        def _init_dvc(self):
            try:
                super()._init_dvc()
            except SCMError:
                self._dvc_repo = None

    live = FileLive(str(live_dir), save_dvc_exp=False, dvcyaml=False)
    for row in history:
        for name, value in row.items():
            if name != "epoch":
                live.log_metric(standardize_metric_name(name, "dvclive.keras"), value)
        live.next_step()
    return DVCLiveCallback(live=live)


def _multi_worker_fixes(model, x: np.ndarray, y: np.ndarray) -> None:
    """Work around keras-team/keras#20585 (Keras 3 fit under MultiWorkerMirroredStrategy):

    - fit and evaluate take their first batch to build the model by reducing it across workers,
      which fails for an (images, targets) pair: a local batch of the same shapes builds it as well;
    - each step's metric values are reduced with `strategy.reduce("MEAN", v, axis=0)`, which fails
      for scalars: inside the step they are handed over as shape (1,), which that reduce averages
      across the replicas into the scalar Keras expects. (Epoch logs are read from the metric
      variables, which TensorFlow sums over the workers.)
    """
    import tensorflow as tf

    build, metrics_result = model._maybe_symbolic_build, model.get_metrics_result

    def local_build(iterator=None, data_batch=None):
        return build(data_batch=(x, y))

    def metrics_per_replica():
        result = metrics_result()
        if not (tf.distribute.has_strategy() and tf.distribute.get_replica_context() is not None):
            return result  # not inside a step
        return {name: tf.reshape(value, [1]) for name, value in result.items()}

    model._maybe_symbolic_build = local_build
    model.get_metrics_result = metrics_per_replica


def train(
    arch: str,
    data: Path,
    out: Path,
    settings: TrainSettings,
    params: ArchParams,
    live_dir: Path | None = None,
    backup_dir: Path | None = None,
    run_file: Path | None = None,
    tensorboard_dir: Path | None = None,
) -> Trained:
    """Fit `arch` on `data`'s train split (validating on val). Writes `out/model.keras`, `best.keras`
    and `history.csv` (the same bytes for the same params and data on a CPU), per-epoch dvclive logs
    in `live_dir`, TensorBoard event files in `tensorboard_dir` and the run's time and memory in
    `run_file`, each when given.

    An interrupted run leaves a backup in `backup_dir` (default `<out>/../.backup/<out name>`); the
    next run with the same settings and data continues from its last finished epoch.
    """
    meta = read_meta(data)
    strategy = distribution(settings.strategy)  # first: a multi-worker strategy must precede other TF ops
    # seeded and configured once per run, before anything else uses Keras (`_fit` imports it again)
    keras_seeded(settings.seed, deterministic=not settings.jit_compile)
    tf = tensorflow()
    head = head_for(len(meta["classes"]), settings.head)
    if settings.loss == "categorical_crossentropy" and head.units == 1:
        raise ConfigError(
            "train.loss: categorical_crossentropy needs a softmax output; "
            "set train.head: softmax (or use mse, binary_crossentropy)"
        )
    if not meta["splits"].get("train"):
        raise InputError(f"{data}: the training split is empty; set prepare.train_size")
    mixed = (
        bool(tf.config.list_physical_devices("GPU")) if settings.mixed_precision == "auto" else settings.mixed_precision
    )

    chief, task_name = task(strategy)
    backup, scratch = backup_dir or default_backup_dir(out), None
    if not chief:  # the other workers do the same work (collective ops need them) into throwaway folders
        scratch = Path(tempfile.mkdtemp(prefix=f"pipeline-{task_name}-"))
        out, backup, live_dir, tensorboard_dir = (
            scratch / "out",
            backup.with_name(f"{backup.name}.{task_name}"),
            None,
            None,
        )
    run = Run(
        arch=arch,
        data=data,
        meta=meta,
        settings=settings,
        params=params,
        head=head,
        strategy=strategy,
        chief=chief,
        mixed=mixed,
        out=out,
        backup=backup,
        scratch=scratch,
        live_dir=live_dir,
        tensorboard_dir=tensorboard_dir,
        run_file=run_file,
    )
    with exclusive(out, "train"):  # one writer per model folder (and its backup)
        return _fit(run)


def _fit(run: Run) -> Trained:
    """`train` once the model folder is this run's alone."""
    import keras  # (`train` seeded and configured it)

    tf = tensorflow()
    settings, strategy, head, out, backup = run.settings, run.strategy, run.head, run.out, run.backup
    x_train, y_train = load_split(run.data, "train")
    x_val, y_val = load_split(run.data, "val")
    _claim_backup(
        backup, _fingerprint(run.arch, settings, run.params, run.data, run.meta, strategy.num_replicas_in_sync)
    )
    callbacks, resume = _callbacks(
        keras, settings, backup, out, run.live_dir, run.tensorboard_dir, "val_loss" if len(x_val) else "loss"
    )

    keras.config.set_dtype_policy("mixed_float16" if run.mixed else "float32")
    try:
        with strategy.scope():
            stats = channel_stats(x_train) if settings.normalize == "standardize" else (None, None)
            model = build_model(
                run.arch, run.meta["input_shape"], head, run.params, Preprocess(settings.augment, *stats)
            )
            if settings.jit_compile:
                _check_xla(model)
            accuracy = (
                keras.metrics.BinaryAccuracy(name="accuracy")
                if head.units == 1
                else keras.metrics.CategoricalAccuracy(name="accuracy")
            )
            model.compile(
                optimizer=_optimizer(keras, settings),
                loss=settings.loss,
                metrics=[accuracy],
                jit_compile=settings.jit_compile,
            )
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            _multi_worker_fixes(model, x_train[:1], targets(y_train[:1], head))
        # (a backup of the very last epoch trains no more, but Keras still wants a first batch to look at)
        first_epoch = min(resume.start_epoch, settings.epochs - 1)
        train_ds = training_dataset(
            x_train, y_train, head, settings.batch_size, settings.seed, first_epoch, settings.epochs
        )
        val_ds = in_order(x_val, y_val, head, settings.batch_size) if len(x_val) else None
        start = time.perf_counter()
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=settings.epochs,
            initial_epoch=resume.start_epoch,
            steps_per_epoch=math.ceil(len(x_train) / settings.batch_size),
            callbacks=callbacks,
            shuffle=False,  # the dataset orders each epoch itself
            verbose=1 if console.is_terminal and run.chief else 0,
        )
        seconds = time.perf_counter() - start
        save_model(model, out / MODEL_FILE)
    finally:
        keras.config.set_dtype_policy("float32")

    _check_finite(resume.history, backup, settings)
    history = _finish(out, backup, run.scratch, resume.history)
    trained = Trained(
        out / MODEL_FILE,
        model.count_params(),
        history,
        seconds,
        peak_rss_mb(),
        resume.start_epoch,
        run.chief,
        strategy.num_replicas_in_sync,
        run.mixed,
    )
    if run.chief and run.run_file is not None:
        write_run_file(run.run_file, trained)
    return trained


def _check_xla(model) -> None:
    """`train.jit_compile` compiles the steps with XLA or fails: Keras would silently fall back to
    no XLA for a model holding a layer XLA cannot compile (the random image transforms)."""

    def walk(layer):
        yield layer
        for sub in getattr(layer, "layers", []):
            yield from walk(sub)

    unsupported = sorted({type(layer).__name__ for layer in walk(model) if not layer.supports_jit})
    if unsupported:
        raise ConfigError(
            f"train.jit_compile: XLA cannot compile {', '.join(unsupported)} (train.augment); "
            "set train.augment: none or train.jit_compile: false"
        )


def _check_finite(history: list[dict[str, float]], backup: Path, settings: TrainSettings) -> None:
    """A loss that became NaN or infinite ends the run as an error (TerminateOnNaN stopped it): its
    weights are garbage, so no model is saved and the backup is discarded, not resumed."""
    bad = next((row for row in history if not all(math.isfinite(v) for v in row.values())), None)
    if bad is not None:
        shutil.rmtree(backup, ignore_errors=True)
        raise DataError(
            f"training diverged: the loss became {bad.get('loss')} in epoch {int(bad['epoch'])}; "
            f"lower the learning rate (train.learning_rate is {settings.learning_rate:g}) or check the data"
        )


def _callbacks(
    keras,
    settings: TrainSettings,
    backup: Path,
    out: Path,
    live_dir: Path | None,
    tensorboard_dir: Path | None,
    monitor: str,
):
    """ModelCheckpoint (best model), EarlyStopping, TensorBoard and dvclive (the chief's: the other
    workers get no folders), and `Resume` last, so its snapshot of an epoch includes what the others
    did in it."""
    from pipeline.train.resume import Resume

    tracked = [keras.callbacks.ModelCheckpoint(str(backup / BEST_FILE), monitor=monitor, save_best_only=True)]
    if settings.early_stopping:
        tracked.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=settings.early_stopping))
    resume = Resume(backup / "epochs", tracked)
    out.mkdir(parents=True, exist_ok=True)
    callbacks = [*tracked, keras.callbacks.TerminateOnNaN()]
    if tensorboard_dir is not None:
        if not resume.start_epoch:  # a fresh run: no leftovers of an earlier one in its folder
            shutil.rmtree(tensorboard_dir, ignore_errors=True)
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), write_graph=False))
    if live_dir is not None:
        callbacks.append(_live_callback(live_dir, resume.history))
    return [*callbacks, resume], resume


def _finish(out: Path, backup: Path, scratch: Path | None, rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Move the best model out of the backup (with fixed zip times, as `model.keras`), write the
    history, delete the backup (it has served)."""
    if (backup / BEST_FILE).exists():
        rewrite_keras_file(backup / BEST_FILE, out / BEST_FILE)
    frame = pd.DataFrame(rows)
    write_text(out / HISTORY_FILE, frame.to_csv(index=False, lineterminator="\n"))
    shutil.rmtree(backup, ignore_errors=True)  # (its parent stays: other runs may be using it)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return {name: frame[name].tolist() for name in frame.columns if name != "epoch"}


def write_run_file(path: Path, trained: Trained) -> None:
    """Figures that vary from run to run, kept apart from the deterministic outputs (in runs/<arch>/,
    which git ignores and no stage declares)."""
    write_json(path, {"train_seconds": round(trained.train_seconds, 3), "peak_rss_mb": round(trained.peak_rss_mb, 1)})
