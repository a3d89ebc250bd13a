"""Side-by-side table of every architecture's metrics (`metrics/<arch>.json`) and the data each was
measured on (`metrics/<arch>.dataset.json`).

Rows measured on different data (an earlier run's leftovers beside a new dataset's models) are
labelled with their dataset and warned about. The sort metric may be missing from some rows (no
best_threshold_accuracy for ten classes): those rows are ranked by `accuracy` instead. The run-time
figures of the last training (`runs/<arch>/run.json`) can be added for the terminal; the Markdown
table, which is a tracked output, never has them (they differ from run to run).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.files import write_text
from pipeline.core.paths import DATASET_SUFFIX, dataset_file, run_file

LOWER_IS_BETTER = {"mse", "log_loss", "loss", "val_loss", "train_seconds", "peak_rss_mb", "params"}
FALLBACK_SORT = "accuracy"  # every evaluation has it
# Every metric `pipeline evaluate` can write (a test checks this against its output), so a sort
# metric that none of the rows has is still told apart from a typo.
KNOWN_METRICS = {
    "mse", "pearson", "accuracy", "best_threshold", "best_threshold_accuracy", "roc_auc", "log_loss",
    "precision", "recall", "f1", "macro_f1", "top5_accuracy", "per_class_accuracy", "params", "epochs",
}  # fmt: skip
UNKNOWN_DATA = "unknown data"


@dataclass(frozen=True)
class Comparison:
    frame: pd.DataFrame  # one row per architecture, best first
    sort: str  # the metric asked for
    fallback: list[str]  # architectures without `sort`, ranked by FALLBACK_SORT instead
    datasets: dict[str, str]  # architecture -> its data's label ("synthetic 1a2b3c4d")
    metrics: dict[str, dict]  # architecture -> its metrics as written (flattened)

    @property
    def mixed(self) -> bool:
        """Whether the rows were measured on more than one dataset (or on unknown data)."""
        return len(set(self.datasets.values())) > 1

    def data_note(self) -> str:
        """One line on the data behind the rows: the dataset, or a warning naming each one's rows."""
        if not self.mixed:
            return f"Data: {next(iter(self.datasets.values()), UNKNOWN_DATA)} (every row)."
        groups: dict[str, list[str]] = {}
        for arch, label in self.datasets.items():
            groups.setdefault(label, []).append(arch)
        listing = "; ".join(f"{', '.join(archs)} on {label}" for label, archs in groups.items())
        return (
            f"Warning: these rows come from {len(groups)} different datasets ({listing}); "
            "compare only rows of the same data."
        )

    def to_json(self, runs: dict[str, dict] | None = None) -> dict:
        """The comparison for `--json`: the rows best first, each with the data it was measured on,
        the metric that ranked it and its metrics as written (flattened names, as the table's
        columns; only those it has), plus its last training's time and memory from `runs`
        (architecture -> run figures, see run_figures) where there are some."""
        rows = []
        for arch in map(str, self.frame.index):
            row = {
                "arch": arch,
                "data": self.datasets.get(arch, UNKNOWN_DATA),
                "ranked_by": FALLBACK_SORT if arch in self.fallback else self.sort,
                "metrics": _finite(self.metrics[arch]),
            }
            if runs and arch in runs:
                row["run"] = runs[arch]
            rows.append(row)
        return {"sort": self.sort, "mixed_data": self.mixed, "rows": rows}


def _finite(metrics: dict) -> dict:
    """JSON has no NaN or infinity: null for those (evaluate never writes them; a hand-edited file might)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}


def flatten(metrics: dict, prefix: str = "") -> dict:
    """Nested metrics named as DVC shows them: {"per_class_accuracy": {"cat": 1}} -> {"per_class_accuracy.cat": 1}."""
    flat: dict = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def metrics_files(metrics_dir: Path) -> list[Path]:
    """`<arch>.json` files of the folder (not their `.dataset.json` companions)."""
    if not metrics_dir.is_dir():
        return []
    return sorted(p for p in metrics_dir.glob("*.json") if not p.stem.endswith(DATASET_SUFFIX))


def read_dataset(metrics_file: Path) -> dict | None:
    """The identity of the data a metrics file was measured on (written by `pipeline evaluate`)."""
    path = dataset_file(metrics_file)
    return json.loads(path.read_text()) if path.exists() else None


def dataset_label(identity: dict | None) -> str:
    if not identity:
        return UNKNOWN_DATA
    return f"{identity.get('source', 'unknown')} {identity.get('fingerprint', '')[:8]}".strip()


def load_metrics(metrics_dir: Path) -> pd.DataFrame:
    """One row per architecture: its quality metrics."""
    files = metrics_files(metrics_dir)
    if not files:
        raise InputError(f"no metrics files in {metrics_dir} (run `pipeline evaluate` first)")
    frame = pd.DataFrame.from_dict({path.stem: flatten(json.loads(path.read_text())) for path in files}, orient="index")
    frame.index.name = "arch"
    return frame


def run_figures(archs: list[str], runs_dir: Path) -> dict[str, dict]:
    """Each architecture's last training time and peak memory (`runs/<arch>/run.json`) where there
    is one: for the terminal and --json only, they change from run to run."""
    return {
        arch: flatten(json.loads(run_file(arch, runs_dir).read_text()))
        for arch in archs
        if run_file(arch, runs_dir).exists()
    }


def with_run_figures(frame: pd.DataFrame, runs_dir: Path) -> pd.DataFrame:
    """`frame` with each architecture's run figures (run_figures) as more columns."""
    runs = run_figures(list(frame.index), runs_dir)
    if not runs:
        return frame
    return frame.join(pd.DataFrame.from_dict(runs, orient="index"))


def compare(metrics_dir: Path, sort: str) -> Comparison:
    """The metrics table, best first by `sort` (ascending where lower is better).

    A row without `sort` is ranked by `accuracy`: among the others by its value when `sort` is
    higher-is-better (an accuracy-like score), after them when it is lower-is-better.
    """
    frame = load_metrics(metrics_dir)
    if sort not in frame.columns and sort.split(".")[0] not in KNOWN_METRICS:
        raise ConfigError(f"compare.sort: unknown metric {sort!r}; valid choices: {', '.join(frame.columns)}")
    lower = sort in LOWER_IS_BETTER

    def value(arch: str, metric: str) -> float | None:
        v = frame.at[arch, metric] if metric in frame.columns else None
        return None if v is None or v != v else float(v)

    def rank(arch: str) -> tuple:
        own, accuracy = value(arch, sort), value(arch, FALLBACK_SORT)
        if own is not None:
            return (0, own if lower else -own)
        if accuracy is None:
            return (2, 0.0)
        return (1, -accuracy) if lower else (0, -accuracy)  # lower-is-better: after the rows that have it

    ranked = sorted(frame.index, key=lambda arch: (*rank(arch), arch))
    missing = [arch for arch in ranked if value(arch, sort) is None]
    files = {p.stem: p for p in metrics_files(metrics_dir)}
    datasets = {arch: dataset_label(read_dataset(files[arch])) for arch in ranked}
    written = {arch: flatten(json.loads(files[arch].read_text())) for arch in ranked}
    return Comparison(frame.loc[ranked], sort, missing, datasets, written)


def format_value(value: float | None) -> str:
    """4 significant digits below 1,000; from 1,000 up, whole numbers with separators (params,
    megabytes); "-" where missing."""
    if value is None or value != value:  # None or NaN: this side lacks the metric
        return "-"
    value = float(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{int(value)}" if value.is_integer() else f"{value:.4g}"


def to_markdown(comparison: Comparison) -> str:
    """The table, then the data note (and which rows were ranked by accuracy)."""
    frame = comparison.frame
    cells = frame.astype(object).map(format_value)
    lines = [cells.to_markdown(colalign=["left"] + ["right"] * len(frame.columns)), "", comparison.data_note()]
    if comparison.fallback:
        lines.append(f"Without {comparison.sort} (ranked by {FALLBACK_SORT}): {', '.join(comparison.fallback)}.")
    return "\n".join(lines) + "\n"


def run(metrics_dir: Path, sort: str, md_out: Path | None = None) -> Comparison:
    """The compare stage: the sorted table, also written as Markdown to `md_out` when given."""
    comparison = compare(metrics_dir, sort)
    if md_out is not None:
        write_text(md_out, to_markdown(comparison))
    return comparison
