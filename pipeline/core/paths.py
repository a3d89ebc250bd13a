"""Where the stages read and write by default: named once here (dvc.yaml passes the same paths
explicitly). Plain constants, so the command line can show them without importing anything."""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")  # data/raw/<source>/
PREPARED_DIR = Path("data/prepared")
MODELS_DIR = Path("models")  # models/<arch>/
METRICS_DIR = Path("metrics")  # metrics/<arch>.json
LIVE_DIR = Path("dvclive")  # per-epoch training metrics (dvclive), one folder per architecture
REPORTS_DIR = Path("reports")
PLOTS_DIR = Path("plots")  # plots/<arch>/
RUN_SUFFIX = "-run"  # metrics/<arch>-run.json: a training run's time and memory, apart from its quality metrics


def run_file(metrics_dir: Path, arch: str) -> Path:
    return metrics_dir / f"{arch}{RUN_SUFFIX}.json"
