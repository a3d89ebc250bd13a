"""Side-by-side table of every architecture's metrics (`metrics/<arch>.json` + its run file)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.core.paths import RUN_SUFFIX, run_file
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.files import write_text

LOWER_IS_BETTER = {"mse", "log_loss", "loss", "val_loss", "train_seconds", "peak_rss_mb", "params"}


def flatten(metrics: dict, prefix: str = "") -> dict:
    """Nested metrics named as DVC shows them: {"per_class_accuracy": {"cat": 1}} -> {"per_class_accuracy.cat": 1}."""
    flat: dict = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_metrics(metrics_dir: Path) -> pd.DataFrame:
    """One row per architecture: its quality metrics, then its run figures where present."""
    files = sorted(p for p in metrics_dir.glob("*.json") if not p.stem.endswith(RUN_SUFFIX)) if metrics_dir.is_dir() else []
    if not files:
        raise InputError(f"no metrics files in {metrics_dir} (run `pipeline evaluate` first)")
    rows = {}
    for path in files:
        row = flatten(json.loads(path.read_text()))
        run = run_file(metrics_dir, path.stem)
        if run.exists():
            row.update(flatten(json.loads(run.read_text())))
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


def format_value(value: float | None) -> str:
    """4 significant digits; whole counts (params) in full with separators; "-" where missing."""
    if value is None or value != value:  # None or NaN: this side lacks the metric
        return "-"
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1000 else f"{value:.4g}"


def to_markdown(frame: pd.DataFrame) -> str:
    cells = frame.astype(object).map(format_value)
    return cells.to_markdown(colalign=["left"] + ["right"] * len(frame.columns)) + "\n"


def run(metrics_dir: Path, sort: str, md_out: Path | None = None) -> pd.DataFrame:
    """The compare stage: the sorted table, also written as Markdown to `md_out` when given."""
    frame = compare(metrics_dir, sort)
    if md_out is not None:
        write_text(md_out, to_markdown(frame))
    return frame
