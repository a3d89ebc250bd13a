"""The registry of data sources: name -> fetch function and its typed params (`fetch.<source>`).

A source's fetch function writes `<out>/<class>/<file>` plus `manifest.csv` and `dataset.json`
(see pipeline.manifest) and returns a FetchResult.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from pipeline.manifest import FetchResult
from pipeline.sources import synthetic


@dataclass(frozen=True)
class Source:
    fetch: Callable[[Path, BaseModel], FetchResult]
    params: type[BaseModel]
    summary: str


SOURCES: dict[str, Source] = {
    "synthetic": Source(synthetic.fetch, synthetic.SyntheticParams, "generated two-class JPEGs, offline"),
}
