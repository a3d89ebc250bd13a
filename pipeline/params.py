"""The sections of params.yaml and where each stage's own params live.

A stage reads only its section (`load_section`), importing only that section's params module (so a
stage's DVC dependencies stay its own package plus the core); other sections are validated only
where an override touches them, so a typo in `-S` fails whatever the command. `pipeline
check-params` validates every section (`load_params`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.core.config import Section, as_dict, assemble, parse, read
from pipeline.core.paths import PARAMS_FILE


def _fetch() -> type[Section]:
    from pipeline.fetch.params import FetchParams

    return FetchParams


def _survey() -> type[Section]:
    from pipeline.prepare.params import SurveyParams

    return SurveyParams


def _prepare() -> type[Section]:
    from pipeline.prepare.params import PrepareParams

    return PrepareParams


def _train() -> type[Section]:
    from pipeline.train.params import TrainParams

    return TrainParams


def _evaluate() -> type[Section]:
    from pipeline.report.params import EvaluateParams

    return EvaluateParams


def _audit() -> type[Section]:
    from pipeline.audit.params import AuditParams

    return AuditParams


def _compare() -> type[Section]:
    from pipeline.report.params import CompareParams

    return CompareParams


# Section name -> its model, imported only when asked for.
SECTIONS: dict[str, Callable[[], type[Section]]] = {
    "fetch": _fetch,
    "survey": _survey,
    "prepare": _prepare,
    "train": _train,
    "evaluate": _evaluate,
    "audit": _audit,
    "compare": _compare,
}


@cache
def params_model() -> type[Section]:
    """The model of the whole file: every section (one class, made once)."""
    return assemble({name: model() for name, model in SECTIONS.items()})


def load_params(path: Path = PARAMS_FILE, overrides: Mapping[str, Any] | None = None) -> Any:
    """Every section of params.yaml, validated, with dotted overrides applied."""
    return parse(params_model(), read(path, list(SECTIONS), overrides), "")


def load_section(name: str, path: Path = PARAMS_FILE, overrides: Mapping[str, Any] | None = None) -> Any:
    """One section of params.yaml, validated, with the overrides that fall in it. The other sections
    are validated only where an override touches them; `load_params` validates everything."""
    data = read(path, list(SECTIONS), overrides)
    for other in sorted({dotted.split(".")[0] for dotted in overrides or {}} - {name}):
        parse(SECTIONS[other](), data.get(other), other)
    return parse(SECTIONS[name](), data.get(name), name)


__all__ = ["SECTIONS", "as_dict", "load_params", "load_section", "params_model"]
