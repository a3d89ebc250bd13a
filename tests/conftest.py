import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A whole pipeline in seconds: 2 x 24 synthetic images at 19x25, tiny models, one epoch.
TINY_PARAMS = """
fetch:
  source: synthetic
  synthetic: {per_class: 24, seed: 0}
survey: {sample: 0, seed: 0}
prepare: {size: auto, scale: 0.05, aspect: stretch, color: rgb, train_size: 0.75, val_size: 0.25, seed: 0}
train:
  archs: [mlp, cnn]
  epochs: 1
  batch_size: 8
  optimizer: adam
  learning_rate: 0.001
  loss: mse
  head: sigmoid
  seed: 0
  momentum: 0.9
  augment: none
  normalize: rescale
  early_stopping: 0
  mixed_precision: auto
  jit_compile: false
  strategy: auto
  mlp: {hidden: [16]}
  cnn: {filters: [4, 8], dense: [16]}
evaluate: {thresholds: 10}
audit: {near_distance: 8, top: 8}
compare: {sort: best_threshold_accuracy}
"""


def fetch_source(out: Path, params, download=None, **fields):
    """The fetch stage (pipeline.fetch.stage) for the source whose params `params` are, with the
    download settings `download` and any other `fetch` keys in `fields`."""
    from pipeline.fetch.params import DownloadSettings, FetchParams
    from pipeline.fetch.sources import SOURCES
    from pipeline.fetch.stage import fetch

    name = next(name for name, source in SOURCES.items() if source.params is type(params))
    cfg = FetchParams(source=name, sections={name: params}, download=download or DownloadSettings(), **fields)
    return fetch(cfg, out)


def pause_at(
    args: list[str], cwd: Path, point: str, n: int, env: dict[str, str] | None = None, timeout: float = 120, **popen
) -> subprocess.Popen:
    """Start `python -m pipeline ARGS` in `cwd` (in a process group of its own) and return once it
    holds still at the `n`-th `point` of progress (pipeline.core.checkpoint), or has ended before
    reaching it (then its returncode is set: a kill test must say it tested nothing). It holds until
    `release(proc)` (or a kill)."""
    pause = cwd / f".pause-{point}-{n}"
    pause.unlink(missing_ok=True)
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": str(ROOT),
        "PIPELINE_PAUSE_AT": f"{point}:{n}",
        "PIPELINE_PAUSE_FILE": str(pause),
    }
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, start_new_session=True, **popen
    )
    deadline = time.monotonic() + timeout
    while not pause.exists() and proc.poll() is None:
        assert time.monotonic() < deadline, (
            f"pipeline {' '.join(args)} reached neither {point} {n} nor its end in {timeout} s"
        )
        time.sleep(0.02)
    if proc.returncode is not None:
        proc.communicate()  # (reaps it and closes its pipes)
    proc.pause = pause
    return proc


def release(proc: subprocess.Popen) -> None:
    """Let a process held by `pause_at` go on."""
    proc.pause.unlink(missing_ok=True)


def kill_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """kill -9 `proc` and every process it started (its process group); return once all are gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    if hasattr(proc, "pause"):
        release(proc)
    deadline = time.monotonic() + timeout
    while True:  # the group's other processes (pool workers, a fork server) are gone too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"processes of {proc.args} outlived kill -9"
        time.sleep(0.02)


def kill_at(args: list[str], cwd: Path, point: str, n: int, env: dict[str, str] | None = None) -> bool:
    """kill -9 `python -m pipeline ARGS` (and its workers) at the `n`-th `point` of progress; False
    when it finished before reaching that point."""
    proc = pause_at(args, cwd, point, n, env)
    if proc.returncode is not None:
        return False
    kill_group(proc)
    return True


def run_cli(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`pipeline ARGS` in `cwd`, in this process: the command line's own entry point (cli.main, what
    `python -m pipeline` runs) with stdout and stderr captured, `env` added to the environment and
    the exit code a process would have (an exception that escapes is a traceback on stderr and exit
    code 1, as in a process). What only a real process shows (TensorFlow's C++ log lines on file
    descriptor 2, signals, a kill) needs `run_process`."""
    from pipeline import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    handler, here, environ = signal.getsignal(signal.SIGINT), os.getcwd(), dict(os.environ)
    os.chdir(cwd)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                cli.main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # what a process would print before dying of it
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        signal.signal(signal.SIGINT, handler)
    proc = subprocess.CompletedProcess(["pipeline", *args], code, stdout.getvalue(), stderr.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_process(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ARGS` in `cwd` as a user would, in a process of its own (with `env`
    added to the environment), capturing its output."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def server():
    """A scripted HTTP server on 127.0.0.1 (tests.scripted.Server), shut down after the test."""
    from tests.scripted import Server

    srv = Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A scratch folder with tiny params.yaml, ready for the CLI."""
    (tmp_path / "params.yaml").write_text(TINY_PARAMS)
    return tmp_path


@pytest.fixture(scope="session")
def evaluated_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline run once, up to `evaluate` (models, metrics, plots), shared by the tests that
    only read it (plots, predict). Copy it before changing anything in it."""
    root = tmp_path_factory.mktemp("evaluated")
    (root / "params.yaml").write_text(TINY_PARAMS)
    for args in (
        ["fetch"],
        ["survey-shapes", "--out", "reports/survey.json"],
        ["prepare", "--survey", "reports/survey.json"],
        ["train"],
        ["evaluate"],
    ):
        run_cli(*args, cwd=root)
    return root


def make_dvc_project(root: Path) -> Path:
    """A scratch git + DVC repository with this project's dvc.yaml, plot templates, code and tiny params."""
    (root / "params.yaml").write_text(TINY_PARAMS)
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, check=True)
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")  # the plot templates dvc.yaml names
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")  # (runs/ among others)
    return root


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    return make_dvc_project(tmp_path)
