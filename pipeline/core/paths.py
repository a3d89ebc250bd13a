"""Where the stages read and write by default: named once here (dvc.yaml passes the same paths
explicitly). Plain constants, so the command line can show them without importing anything."""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")  # data/raw/<source>/
PREPARED_DIR = Path("data/prepared")
MODELS_DIR = Path("models")  # models/<arch>/
METRICS_DIR = Path("metrics")  # metrics/<arch>.json (numbers only) and <arch>.dataset.json
LIVE_DIR = Path("dvclive")  # per-epoch training metrics (dvclive), one folder per architecture
REPORTS_DIR = Path("reports")
PLOTS_DIR = Path("plots")  # plots/<arch>/
# runs/<arch>/: what differs from run to run (time, memory, TensorBoard event files). Git-ignored and
# declared by no stage, so neither git nor dvc.lock sees it change: every tracked output stays byte-identical.
RUNS_DIR = Path("runs")
DATASET_SUFFIX = ".dataset"  # metrics/<arch>.dataset.json: the identity of the data <arch>.json was measured on


def run_file(arch: str, runs_dir: Path = RUNS_DIR) -> Path:
    """A training run's time and memory (`train_seconds`, `peak_rss_mb`)."""
    return runs_dir / arch / "run.json"


def tensorboard_dir(arch: str, runs_dir: Path = RUNS_DIR) -> Path:
    return runs_dir / arch / "tensorboard"


def dataset_file(metrics_file: Path) -> Path:
    """The dataset identity beside a metrics file: metrics/<arch>.json -> metrics/<arch>.dataset.json."""
    return metrics_file.with_name(f"{metrics_file.stem}{DATASET_SUFFIX}.json")
