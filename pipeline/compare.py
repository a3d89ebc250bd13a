"""Side-by-side table of every architecture's metrics (`metrics/<arch>.json` + its run file)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.errors import ConfigError, InputError

RUN_SUFFIX = "-run"
LOWER_IS_BETTER = {"mse", "log_loss", "train_seconds", "peak_rss_mb", "params"}


def run_file(metrics_dir: Path, arch: str) -> Path:
    return metrics_dir / f"{arch}{RUN_SUFFIX}.json"


def load_metrics(metrics_dir: Path) -> pd.DataFrame:
    """One row per architecture: its quality metrics, then its run figures where present."""
    files = sorted(p for p in metrics_dir.glob("*.json") if not p.stem.endswith(RUN_SUFFIX)) if metrics_dir.is_dir() else []
    if not files:
        raise InputError(f"no metrics files in {metrics_dir} (run `pipeline evaluate` first)")
    rows = {}
    for path in files:
        row = json.loads(path.read_text())
        run = run_file(metrics_dir, path.stem)
        if run.exists():
            row.update(json.loads(run.read_text()))
        rows[path.stem] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "arch"
    return frame


def compare(metrics_dir: Path, sort: str) -> pd.DataFrame:
    """The metrics table, best first by `sort` (ascending for metrics where lower is better)."""
    frame = load_metrics(metrics_dir)
    if sort not in frame.columns:
        raise ConfigError(f"compare.sort: unknown metric {sort!r}; valid choices: {', '.join(frame.columns)}")
    return frame.sort_values(sort, ascending=sort in LOWER_IS_BETTER, kind="stable")


def to_markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(floatfmt=".4g") + "\n"
