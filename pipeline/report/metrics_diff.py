"""What changed in the metrics between two git revisions or DVC experiments.

DVC computes the comparison (`Repo.metrics.diff`, the function behind `dvc metrics diff`), so the
files compared are exactly the ones dvc.yaml declares as metrics at each revision; we add the
architecture, the percentage change and a readable table. A side that lacks an architecture or a
metric shows it as missing (None) rather than failing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from pipeline.core.errors import InputError
from pipeline.report.compare import LOWER_IS_BETTER, format_value

WORKSPACE = "workspace"
NEUTRAL = {"best_threshold", "epochs", "step"}  # settings-like numbers: a change is neither better nor worse
DIGITS = 6  # metrics files hold 6 decimals; rounding the delta removes float noise such as 0.07500000000000001


@dataclass(frozen=True)
class Change:
    arch: str
    metric: str
    old: float | None  # None: missing on that side
    new: float | None
    delta: float | None = field(init=False)
    pct: float | None = field(init=False)  # delta as a percentage of |old|; None when old is 0 or missing

    def __post_init__(self) -> None:
        delta = None if self.old is None or self.new is None else _round(self.new - self.old)
        pct = None if delta is None or self.old == 0 else round(100 * delta / abs(self.old), 2)
        object.__setattr__(self, "delta", delta)
        object.__setattr__(self, "pct", pct)

    @property
    def verdict(self) -> str:
        """better, worse or "" (no change, missing side, or a metric without a direction)."""
        parts = self.metric.split(".")  # per_class_accuracy.<class>, dvclive.<metric>
        if not self.delta or parts[0] in NEUTRAL or parts[-1] in NEUTRAL:
            return ""
        lower = parts[0] in LOWER_IS_BETTER or parts[-1] in LOWER_IS_BETTER
        return "better" if (self.delta < 0) == lower else "worse"


@dataclass(frozen=True)
class MetricsDiff:
    old_rev: str
    new_rev: str
    changes: list[Change]
    errors: dict[str, str]  # "<rev>: <file>" -> why DVC could not read it

    def to_json(self) -> dict:
        return {
            "old": self.old_rev,
            "new": self.new_rev,
            "changes": [asdict(c) for c in self.changes],
            "errors": self.errors,
        }


def _round(value: float) -> float:
    return value if isinstance(value, int) else round(value, DIGITS)


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def name_of(path: str, metric: str) -> tuple[str, str]:
    """(arch, metric) of a metric in a metrics file: metrics/<arch>.json holds the evaluation's metrics;
    <dir>/<arch>/metrics.json (dvclive's summary of training) gets its metrics prefixed with <dir>."""
    p = PurePosixPath(path)
    if p.parent.name == "metrics":
        return p.stem, metric
    if p.name == "metrics.json" and len(p.parts) >= 3:
        return p.parent.name, f"{p.parent.parent.name}.{metric}"
    return path, metric


def _errors(raw: dict) -> dict[str, str]:
    out = {}
    for rev, value in raw.items():
        if isinstance(value, dict):
            out.update({f"{rev}: {path}": str(exc) for path, exc in value.items()})
        else:
            out[rev] = str(value)
    return out


def metrics_diff(old_rev: str = "HEAD", new_rev: str | None = None, all_metrics: bool = False) -> MetricsDiff:
    """Metrics of `old_rev` against `new_rev` (None: the workspace), one Change per architecture and metric.

    Revisions are anything git or DVC resolves: a commit, branch, tag, `HEAD~1` or an experiment name
    from `dvc exp show`. Unchanged metrics are left out unless `all_metrics`.
    """
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    new_rev = new_rev or WORKSPACE
    try:
        with Repo() as repo:
            if repo.scm.no_commits:
                raise InputError("this git repository has no commits yet: commit a run first, then diff against it")
            raw = repo.metrics.diff(old_rev, new_rev, all=True)
    except NotDvcRepoError:
        raise InputError("not inside a DVC project: run `pipeline metrics diff` from the project folder") from None
    except DvcException as exc:
        raise InputError(
            f"{exc}; expected a git revision (commit, branch, tag, HEAD~1) or an experiment name from `dvc exp show`"
        ) from None

    changes = []
    for path, metrics in raw.get("diff", {}).items():
        for metric, values in metrics.items():
            change = Change(*name_of(path, metric), _number(values.get("old")), _number(values.get("new")))
            if change.old is None and change.new is None:
                continue  # not a number on either side (DVC keeps numbers only anyway)
            if all_metrics or change.old != change.new:
                changes.append(change)
    changes.sort(key=lambda c: (c.arch, "." in c.metric and not c.metric.startswith("per_class"), c.metric))
    return MetricsDiff(old_rev, new_rev, changes, _errors(raw.get("errors", {})))


def _signed(value: float | None, suffix: str = "") -> str:
    if value is None:
        return "-"
    text = format_value(value)
    return (text if text.startswith("-") or value == 0 else f"+{text}") + suffix


def rows(diff: MetricsDiff) -> list[list[str]]:
    """The table's cells: arch, metric, old, new, delta, change %."""
    return [
        [c.arch, c.metric, format_value(c.old), format_value(c.new), _signed(c.delta), _signed(c.pct, "%")]
        for c in diff.changes
    ]


def headers(diff: MetricsDiff) -> list[str]:
    return ["arch", "metric", diff.old_rev, diff.new_rev, "delta", "change"]


def to_markdown(diff: MetricsDiff) -> str:
    """A pull-request-comment table; a changed metric's delta is marked with its verdict."""
    if not diff.changes:
        return f"No metric changed between `{diff.old_rev}` and `{diff.new_rev}`.\n"
    lines = ["| " + " | ".join(headers(diff)) + " |", "|:--|:--|--:|--:|--:|--:|"]
    for change, cells in zip(diff.changes, rows(diff)):
        if change.verdict:
            cells[4] += f" ({change.verdict})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
