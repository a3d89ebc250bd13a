import os
import shutil
import subprocess
import sys
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
compare: {sort: best_threshold_accuracy}
"""


def run_cli(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ARGS` in `cwd` as a user would (with `env` added to the environment),
    capturing its output."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


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
