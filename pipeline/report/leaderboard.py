"""Every experiment x architecture in one table: the leaderboard across DVC experiments.

DVC gathers the data (`dvc.api.exp_show`: the workspace, the baseline commit and its experiments,
each with its params and the metrics files dvc.yaml declares); this module makes one row per
experiment and architecture from `metrics/<arch>.json`, keeps the params that differ between
experiments (the ones that explain the ranking), and sorts. `pipeline metrics diff A B` then
compares any two experiments of it. DVC's public interfaces only: a metric that exp_show's flat
table names without its file gets it back from the experiments' records (`Repo.experiments.show`,
as `dvc exp show --json` prints them).
"""

from __future__ import annotations

import math
import re

import pandas as pd

from pipeline.core.errors import ConfigError, InputError
from pipeline.report.compare import LOWER_IS_BETTER

METRICS_PREFIX = "metrics/"  # metrics/<arch>.json:<metric>, as DVC names a metrics file's values
PARAMS_PREFIX = (
    "params.yaml:"  # DVC names params `train.epochs`, or `params.yaml:train.epochs` beside other params files
)
COLUMNS = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}  # exp_show's own columns
DEP_HASH = re.compile(r"^[0-9a-f]{32}(\.dir)?$")  # exp_show also lists each dependency's MD5 under its path
DEFAULT_METRICS = ("accuracy", "best_threshold_accuracy", "mse", "pearson", "macro_f1", "roc_auc")


def experiment_rows() -> list[dict]:
    """What `dvc exp show` shows, as flat records (the repository is the working directory)."""
    import dvc.api
    from dvc.exceptions import DvcException, NotDvcRepoError

    try:
        return full_metric_names(dvc.api.exp_show(), _metric_names())
    except NotDvcRepoError:
        raise InputError("not inside a DVC project: run `pipeline leaderboard` from the project folder") from None
    except DvcException as exc:
        raise InputError(f"dvc exp show failed: {exc}") from None


def _metric_names() -> dict[str, list[str]]:
    """Each metrics file's metric names over the experiments `dvc exp show` lists, read from their
    records (`Repo.experiments.show`, each as `dvc exp show --json` prints it)."""
    from dvc.repo import Repo

    with Repo.open(None) as repo:  # (the project the working directory is in, as dvc.api does)
        return metric_names([state.dumpd() for state in repo.experiments.show()])


def metric_names(records: list[dict]) -> dict[str, list[str]]:
    """{metrics file: its metric names} in `dvc exp show --json` records (a baseline and, under
    `experiments`, its experiments), nested keys joined with dots as DVC's table names them."""
    names: dict[str, dict[str, None]] = {}

    def collect(record: dict) -> None:
        for path, result in ((record.get("data") or {}).get("metrics") or {}).items():
            values = result.get("data")
            if isinstance(values, dict):
                names.setdefault(path, {}).update(dict.fromkeys(_dotted(values)))
        for experiment in record.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                collect(revision)

    for record in records:
        collect(record)
    return {path: list(found) for path, found in names.items()}


def _dotted(values: dict, prefix: str | None = None) -> list:
    """The leaves of nested `values`, named `a.b.c` as DVC's table names them (flatten_dict's dot
    reducer); an empty mapping has none."""
    names = []
    for key, value in values.items():
        name = key if prefix is None else f"{prefix}.{key}"
        names.extend(_dotted(value, name) if isinstance(value, dict) else [name])
    return names


def full_metric_names(rows: list[dict], metrics: dict[str, list[str]]) -> list[dict]:
    """exp_show names a metric `<file>:<name>` only where another file (or a param) has the same
    name, and just `<name>` where it is unique, e.g. when one architecture alone was evaluated: give
    every metric its file back, so such rows are found too."""
    owner = {name: path for path, names in metrics.items() for name in names}
    return [
        {(f"{owner[key]}:{key}" if ":" not in key and key in owner else key): value for key, value in row.items()}
        for row in rows
    ]


def leaderboard(rows: list[dict], sort: str, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (experiment, arch) with the chosen metrics and the params that differ, best first
    by `sort` (ascending where lower is better; rows without it last)."""
    records, params = [], []
    for row in rows:
        name = row.get("Experiment") or row.get("rev") or "?"
        if row.get("State") in ("Queued", "Running", "Failed"):
            continue
        by_arch: dict[str, dict] = {}
        for key, value in row.items():
            if key.startswith(METRICS_PREFIX) and ":" in key and _number(value):
                file, metric = key[len(METRICS_PREFIX) :].split(":", 1)
                if file.endswith(".json"):
                    by_arch.setdefault(file[: -len(".json")], {})[metric] = float(value)
        settings = {
            key.removeprefix(PARAMS_PREFIX): value
            for key, value in row.items()
            if key not in COLUMNS
            and (":" not in key or key.startswith(PARAMS_PREFIX))
            and not (isinstance(value, str) and DEP_HASH.match(value))
        }
        for arch, values in sorted(by_arch.items()):
            records.append({"experiment": name, "arch": arch, **values})
            params.append(settings)
    if not records:
        raise InputError("no experiment has metrics yet: run `dvc repro` or `dvc exp run` first")
    frame = pd.DataFrame(records)
    available = [c for c in frame.columns if c not in ("experiment", "arch")]
    if sort not in available:
        raise ConfigError(f"--sort {sort!r}: no experiment has that metric; valid choices: {', '.join(available)}")
    chosen = metrics or [m for m in DEFAULT_METRICS if m in available]
    unknown = [m for m in chosen if m not in available]
    if unknown:
        raise ConfigError(f"--metric {unknown[0]!r}: unknown; valid choices: {', '.join(available)}")
    columns = ["experiment", "arch", *dict.fromkeys([sort, *chosen])]
    differing = _differing(params)
    table = pd.concat([frame[columns], pd.DataFrame([{k: p.get(k) for k in differing} for p in params])], axis=1)
    return table.sort_values(sort, ascending=sort in LOWER_IS_BETTER, na_position="last", kind="stable").reset_index(
        drop=True
    )


def _differing(params: list[dict]) -> list[str]:
    """The params whose values are not the same in every row, in a stable order."""
    keys = sorted({key for p in params for key in p})
    return [key for key in keys if len({repr(p.get(key)) for p in params}) > 1]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
