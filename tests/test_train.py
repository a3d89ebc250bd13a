"""The training engine: input pipeline, in-graph preprocessing, determinism across processes, resume
after a killed run, and the tf.distribute strategies (two logical CPUs; two workers on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.params import load_params
from pipeline.train.models.common import Augment, Head, Preprocess
from pipeline.train.resume import POINTER
from pipeline.train.settings import TrainSettings
from tests.conftest import ROOT, kill_group, pause_at, run_cli
from tests.test_models import write_prepared

# --- input pipeline ------------------------------------------------------------------------------


def batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(x), np.asarray(y)) for x, y in ds]


def test_epoch_order_depends_on_seed_and_epoch_only():
    from pipeline.train.loop import epoch_order

    first = epoch_order(50, 0, 3)
    assert sorted(first.tolist()) == list(range(50))
    assert np.array_equal(first, epoch_order(50, 0, 3))
    assert not np.array_equal(first, epoch_order(50, 0, 4)) and not np.array_equal(first, epoch_order(50, 1, 3))


def test_training_dataset_resumes_mid_run_with_the_same_batches(tmp_path):
    from pipeline.core.prepared import load_split
    from pipeline.train.loop import training_dataset

    data = write_prepared(tmp_path, 20, 2, (4, 4, 1), 3)
    x, labels = load_split(data, "train")
    assert isinstance(x, np.memmap)  # read from disk batch by batch, never loaded whole
    head = Head(3, "softmax")
    full = batches(training_dataset(x, labels, head, 8, seed=5, first_epoch=0, epochs=3))
    assert len(full) == 9  # 3 epochs x ceil(20 / 8) batches, the last of each epoch short
    seen = np.concatenate([b[0] for b in full[:3]]).reshape(20, -1)
    assert sorted(map(bytes, seen)) == sorted(map(bytes, np.asarray(x).reshape(20, -1)))  # each example once per epoch
    for images, targets in full:
        rows = [np.flatnonzero((np.asarray(x).reshape(20, -1) == img.reshape(-1)).all(1))[0] for img in images]
        np.testing.assert_array_equal(targets, np.eye(3, dtype=np.float32)[labels[rows]])  # images keep their labels
    resumed = batches(training_dataset(x, labels, head, 8, seed=5, first_epoch=2, epochs=3))
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(full[6:], resumed, strict=True)
    )
    assert not np.array_equal(full[0][0], full[3][0])  # reshuffled every epoch


def test_channel_stats_streams_the_memory_map(tmp_path):
    from pipeline.train.loop import channel_stats

    x = np.random.default_rng(0).integers(0, 256, (37, 5, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    mean, std = channel_stats(np.load(tmp_path / "x.npy", mmap_mode="r"), chunk=10)
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(0), rtol=1e-9)


# --- preprocessing in the graph --------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, layers",
    [
        ("seed001", ["RandomRotation", "RandomTranslation", "RandomShear", "RandomZoom"]),
        ("seed003", ["RandomRotation", "RandomTranslation", "RandomFlip"]),
    ],
)
def test_augmentation_changes_inputs_only_in_training(preset, layers):
    from pipeline.train.models import build_model
    from pipeline.train.models.mlp import MlpParams
    from pipeline.train.runtime import keras_seeded

    keras_seeded(0)
    model = build_model(
        "mlp", (24, 24, 3), Head(1, "sigmoid"), MlpParams(hidden=[4]), Preprocess(Augment.model_validate(preset))
    )
    augment = model.get_layer("augment")
    assert [layer.__class__.__name__ for layer in augment.layers] == layers
    x = np.random.default_rng(0).integers(0, 256, (8, 24, 24, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(augment(x, training=False)), x)
    assert not np.allclose(np.asarray(augment(x, training=True)), x)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))  # inference is not random
    plain = build_model("mlp", (24, 24, 3), Head(1, "sigmoid"), MlpParams(hidden=[4]))
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-6)


def test_no_augmentation_by_default():
    from pipeline.train.models import build_model
    from pipeline.train.models.mlp import MlpParams

    model = build_model("mlp", (8, 8, 1), Head(1, "sigmoid"), MlpParams(hidden=[4]))
    assert "augment" not in [layer.name for layer in model.layers]
    assert TrainSettings().augment == Augment() and not TrainSettings().augment.active
    assert (
        load_params(ROOT / "params.yaml").train.for_arch("cnn")[0].augment == Augment()
    )  # the default run stays as it was


def test_standardize_uses_the_training_split_statistics():
    from pipeline.train.models import build_model
    from pipeline.train.models.mlp import MlpParams

    x = np.random.default_rng(1).integers(0, 256, (64, 6, 6, 3)).astype(np.uint8)
    x[..., 2] //= 4  # a dark channel
    from pipeline.train.loop import channel_stats

    model = build_model(
        "mlp", (6, 6, 3), Head(1, "sigmoid"), MlpParams(hidden=[4]), Preprocess(Augment(), *channel_stats(x))
    )
    z = np.asarray(model.get_layer("normalize")(x.astype(np.float32))).reshape(-1, 3)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


# --- determinism and resume, in fresh processes ------------------------------------------------------

# A small pre-activation net with augmentation, dropout and batch norm: every source of randomness
# and state the engine has to reproduce. About a second per epoch on two cores.
ENGINE_ARGS = (
    "-S", "train.epochs=4", "-S", "train.batch_size=16", "-S", "train.augment=seed003",
    "-S", "train.normalize=standardize", "-S", "train.early_stopping=3", "-S", "train.preact.filters=[8,16]",
    "-S", "train.preact.units=2",
)  # fmt: skip


def train_cmd(out: str, *extra: str) -> list[str]:
    return [
        *ENGINE_ARGS,
        *extra,
        "train",
        "--arch",
        "preact",
        "--data",
        "data",
        "--out",
        out,
        "--run-file",
        f"{out}-run.json",
        "--live",
        f"{out}-live",
    ]  # (TensorBoard: runs/<out>/)


def weights(path: Path) -> list[np.ndarray]:
    from pipeline.train.runtime import load_model

    return load_model(path).get_weights()


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return len(wa) == len(wb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(wa, wb))


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    """Four trainings of the same net: A and B with the same params in two processes, C with
    another seed, D killed after its second epoch and rerun (A and C run beside the kill)."""
    root = tmp_path_factory.mktemp("engine")
    write_prepared(root / "data", 480, 64, (20, 20, 3), 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    a, c = start(*train_cmd("A")), start(*train_cmd("C", "-S", "train.seed=1"))
    pointer = root / ".backup" / "D" / "epochs" / POINTER  # Resume's record of D's last backed-up epoch
    d = pause_at(train_cmd("D"), root, "train.epoch", 2)  # its second epoch backed up, the third not begun
    killed = d.returncode
    if killed is None:
        kill_group(d)
        killed = d.returncode
    backed_up = json.loads(pointer.read_text())["epoch"] if pointer.exists() else 0
    for proc in (a, c):
        _, err = proc.communicate()
        assert proc.returncode == 0, err
    b = start(*train_cmd("B"))
    resumed = run_cli(*train_cmd("D"), cwd=root)
    b_stdout, b_err = b.communicate()
    assert b.returncode == 0, b_err
    return {
        "root": root,
        "killed_returncode": killed,
        "backed_up": backed_up,
        "resumed_stdout": resumed.stdout,
        "b_stdout": b_stdout,
    }


@pytest.mark.slow
def test_same_params_in_two_processes_give_identical_bytes_and_weights(engine_runs):
    root = engine_runs["root"]
    for rel in ("history.csv", "model.keras", "best.keras"):  # the .keras files too: fixed zip times, no save date
        assert (root / "A" / rel).read_bytes() == (root / "B" / rel).read_bytes(), rel
    assert sorted(p.name for p in (root / "A").iterdir()) == [
        "best.keras",
        "history.csv",
        "model.keras",
    ]  # nothing that varies
    assert (root / "A-live/metrics.json").read_bytes() == (root / "B-live/metrics.json").read_bytes()
    assert same_weights(root / "A/model.keras", root / "B/model.keras")
    assert same_weights(root / "A/best.keras", root / "B/best.keras")
    history = (root / "A/history.csv").read_text().splitlines()
    assert history[0] == "epoch,accuracy,loss,val_accuracy,val_loss" and len(history) == 5


@pytest.mark.slow
def test_another_seed_gives_other_results(engine_runs):
    root = engine_runs["root"]
    assert (root / "A/history.csv").read_bytes() != (root / "C/history.csv").read_bytes()
    assert not same_weights(root / "A/model.keras", root / "C/model.keras")


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(engine_runs):
    root = engine_runs["root"]
    assert engine_runs["killed_returncode"] == -signal.SIGKILL, "the run finished before it could be killed"
    assert engine_runs["backed_up"] in (2, 3)  # killed during epoch 3 or 4 of 4
    assert f"resumed after epoch {engine_runs['backed_up']}" in engine_runs["resumed_stdout"]
    assert "resumed" not in engine_runs["b_stdout"]
    assert (root / "D/history.csv").read_bytes() == (root / "A/history.csv").read_bytes()
    assert (root / "D/model.keras").read_bytes() == (root / "A/model.keras").read_bytes()
    assert same_weights(root / "D/model.keras", root / "A/model.keras")
    assert same_weights(root / "D/best.keras", root / "A/best.keras")
    # dvclive holds every epoch once, as in the uninterrupted run
    for name in ("train/loss.tsv", "eval/accuracy.tsv"):
        assert (root / "D-live/plots/metrics" / name).read_text() == (root / "A-live/plots/metrics" / name).read_text()
    assert len((root / "D-live/plots/metrics/train/loss.tsv").read_text().splitlines()) == 5
    assert not (root / ".backup" / "D").exists()  # finished: the backup is gone
    assert list((root / "runs/D/tensorboard").iterdir())  # TensorBoard event files, outside the model folder
    run = json.loads((root / "D-run.json").read_text())
    assert run["peak_rss_mb"] > 0 and run["train_seconds"] > 0


def test_a_backup_of_other_settings_is_not_resumed(tmp_path):
    from pipeline.train.loop import train

    data = write_prepared(tmp_path / "data", 16, 4, (8, 8, 3), 2)
    backup = tmp_path / ".backup" / "m"
    (backup / "epochs").mkdir(parents=True)
    (backup / "fingerprint").write_text("made with other settings")
    (backup / "epochs" / POINTER).write_text('{"epoch": 1}')
    settings, params = load_params(Path("/nonexistent"), {"train.epochs": 1, "train.mlp.hidden": [4]}).train.for_arch(
        "mlp"
    )
    result = train("mlp", data, tmp_path / "m", settings, params)
    assert result.resumed_from == 0 and len(result.history["loss"]) == 1
    assert not backup.exists()


def test_a_kill_while_a_backup_is_written_leaves_the_previous_one_usable(tmp_path, monkeypatch):
    """The CI failure this guards against: killed while Keras wrote its weights file in place, the
    rerun found a truncated HDF5 file and could not start. Here the third backup dies half-written."""
    import keras

    from pipeline.train.loop import train

    data = write_prepared(tmp_path / "data", 32, 8, (8, 8, 3), 2)
    settings, params = load_params(
        Path("/nonexistent"), {"train.epochs": 4, "train.batch_size": 8, "train.mlp.hidden": [4]}
    ).train.for_arch("mlp")
    uninterrupted = train("mlp", data, tmp_path / "whole", settings, params, live_dir=tmp_path / "whole-live")

    class Killed(BaseException):
        pass

    save_weights, calls = keras.Model.save_weights, []

    def dies_on_the_third(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 3:
            Path(filepath).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))  # 96 bytes of a header, as in CI
            raise Killed
        return save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", dies_on_the_third)
    with pytest.raises(Killed):
        train("mlp", data, tmp_path / "m", settings, params, live_dir=tmp_path / "m-live")
    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    assert json.loads((tmp_path / ".backup" / "m" / "epochs" / POINTER).read_text()) == {"epoch": 2}

    resumed = train("mlp", data, tmp_path / "m", settings, params, live_dir=tmp_path / "m-live")
    assert resumed.resumed_from == 2
    assert resumed.history == uninterrupted.history
    assert same_weights(tmp_path / "m" / "model.keras", uninterrupted.model_path)
    assert not (tmp_path / ".backup" / "m").exists()


# --- strategies ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    write_prepared(tmp_path / "data", 40, 8, (12, 12, 1), 2)
    script = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from pipeline.cli import main\n"
        "sys.argv = ['pipeline'] + sys.argv[1:]\n"
        "main()\n"
    )
    args = [
        "-S",
        "train.strategy=mirrored",
        "-S",
        "train.epochs=2",
        "-S",
        "train.batch_size=8",
        "train",
        "--arch",
        "convnet",
        "--data",
        "data",
        "--out",
        "m",
        "--run-file",
        "m-run.json",
        "--live",
        "m-live",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "on 2 replica(s)" in proc.stdout
    assert len((tmp_path / "m/history.csv").read_text().splitlines()) == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_strategy_two_processes_on_localhost(tmp_path):
    write_prepared(tmp_path / "data", 40, 8, (12, 12, 1), 2)
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    args = [
        "-S",
        "train.strategy=multi_worker",
        "-S",
        "train.epochs=2",
        "-S",
        "train.batch_size=8",
        "train",
        "--arch",
        "convnet",
        "--data",
        "data",
        "--out",
        "mw",
        "--run-file",
        "mw-run.json",
        "--live",
        "mw-live",
    ]
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "pipeline", *args],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert "on 2 replica(s)" in outputs[0][0] and outputs[1][0] == ""  # worker 0 is the chief and reports
    assert len((tmp_path / "mw/history.csv").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "mw-live/metrics.json").read_text())["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".backup",
        ".mw.lock",
        "data",
        "mw",
        "mw-live",
        "mw-run.json",
        "runs",
    ]  # the other worker left nothing
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["mw"]  # (the chief's TensorBoard logs)
    assert not list((tmp_path / ".backup").iterdir())  # both backups deleted at the end


def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path, monkeypatch):
    write_prepared(tmp_path / "data", 8, 4, (8, 8, 1), 2)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = ["-S", "train.strategy=multi_worker", "train", "--arch", "convnet", "--data", "data"]
    proc = run_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "multi_worker needs TF_CONFIG" in proc.stderr


@pytest.mark.slow
def test_mixed_precision_and_xla_are_options(tmp_path):
    """XLA really compiles the steps (its dump holds the compiled modules) and Keras does not fall
    back to no XLA; mixed float16 with a float32 output layer."""
    import keras

    from pipeline.train.runtime import load_model

    write_prepared(tmp_path / "data", 16, 8, (12, 12, 1), 10)
    args = [
        "-S",
        "train.epochs=1",
        "-S",
        "train.batch_size=8",
        "-S",
        "train.mixed_precision=true",
        "-S",
        "train.jit_compile=true",
        "train",
        "--arch",
        "convnet",
        "--data",
        "data",
        "--out",
        "m",
    ]
    proc = run_cli(*args, cwd=tmp_path, env={"XLA_FLAGS": f"--xla_dump_to={tmp_path / 'xla'}"})
    assert (
        "jit_compile" not in proc.stderr
    )  # Keras' "Model doesn't support jit_compile=True. Proceeding with jit_compile=False"
    assert any("train_function" in p.name or "one_step_on_data" in p.name for p in (tmp_path / "xla").iterdir()), (
        sorted(p.name for p in (tmp_path / "xla").iterdir())[:10]
    )
    model = load_model(tmp_path / "m/model.keras")
    assert model.get_layer("head").dtype_policy.name == "float32"
    assert any(layer.dtype_policy.name == "mixed_float16" for layer in model.layers if layer.name != "head")
    assert model.predict(np.zeros((1, 12, 12, 1), np.uint8), verbose=0).dtype == np.float32
    assert keras.config.dtype_policy().name == "float32"
    auto, _ = load_params(Path("/nonexistent")).train.for_arch("convnet")
    assert auto.mixed_precision == "auto" and not auto.jit_compile  # off by default (on a GPU, auto turns it on)


def test_xla_with_augmentation_it_cannot_compile_is_refused(tmp_path):
    write_prepared(tmp_path / "data", 16, 8, (12, 12, 1), 2)
    (tmp_path / "params.yaml").write_text("train: {}\n")  # (no "using the default params" warning line)
    proc = run_cli(
        "-S",
        "train.jit_compile=true",
        "-S",
        "train.augment=seed001",
        "train",
        "--arch",
        "convnet",
        "--data",
        "data",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert (
        "train.jit_compile: XLA cannot compile RandomRotation, RandomShear, RandomTranslation, RandomZoom "
        "(train.augment)" in proc.stderr
    )


def test_saved_models_have_fixed_zip_times_and_no_save_date(tmp_path):
    import zipfile

    from pipeline.train.models import build_model
    from pipeline.train.models.mlp import MlpParams
    from pipeline.train.runtime import ZIP_TIME, keras_seeded, load_model, save_model

    keras_seeded(0)
    model = build_model("mlp", (4, 4, 1), Head(1, "sigmoid"), MlpParams(hidden=[3]))
    save_model(model, tmp_path / "a.keras")
    time.sleep(2.1)  # a zip stores time in steps of 2 s
    save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.keras") as saved:
        assert {info.date_time for info in saved.infolist()} == {ZIP_TIME}
        assert "date_saved" not in json.loads(saved.read("metadata.json"))
        shared = re.findall(r'"shared_object_id": (\d+)', saved.read("config.json").decode())
        assert shared and set(shared) == {"1"}  # Keras wrote id() of the dtype policy the layers share
    assert all(
        np.array_equal(a, b) for a, b in zip(load_model(tmp_path / "a.keras").get_weights(), model.get_weights())
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras"]  # no temporary left


# --- TensorFlow's start-up noise ----------------------------------------------------------------------


@pytest.mark.slow
def test_training_prints_no_tensorflow_noise_on_a_cpu_machine(tmp_path):
    write_prepared(tmp_path / "data", 16, 8, (8, 8, 3), 2)
    (tmp_path / "params.yaml").write_text("train: {}\n")  # (no "using the default params" warning)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "-S", "train.epochs=1", "train", "--arch", "cnn", "--data", "data"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    noise = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "cuInit" in line or "E0000" in line or "absl::InitializeLog" in line or re.match(r"[IWEF]\d{4} ", line)
    ]
    assert not noise, noise
    assert proc.stderr == "" and proc.stdout.startswith("cnn: ")


@pytest.mark.slow
def test_a_log_level_the_user_sets_is_respected(tmp_path):
    script = "from pipeline.train.runtime import tensorflow; tensorflow()"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert proc.returncode == 0 and re.search(r"^I\d{4} .*\] ", proc.stderr, re.M), (
        proc.stderr
    )  # TensorFlow's info lines, as asked


def test_which_start_up_lines_are_noise():
    from pipeline.train.runtime import is_noise

    notice = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    info = "I0000 00:00:1795867937.581063   26142 port.cc:153] oneDNN custom operations are on."
    cuinit = (
        "E0000 00:00:1795867941.482552   26142 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: UNKNOWN ERROR (303)"
    )
    other_error = "E0000 00:00:1795867941.482552   26142 some.cc:1] something else failed"
    python = "/x/y.py:3: UserWarning: a Python warning"
    assert is_noise(notice, 2, True) and is_noise(info, 2, True) and is_noise(cuinit, 2, True)
    assert not is_noise(cuinit, 2, False)  # an NVIDIA GPU is there: a failing cuInit is a real error
    assert not is_noise(other_error, 2, True) and not is_noise(python, 3, True)
    assert not is_noise(info, 0, False) and not is_noise(notice, 0, False)  # TF_CPP_MIN_LOG_LEVEL=0: everything
