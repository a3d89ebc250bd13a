"""The registry of data sources: name -> fetch function and its typed params (`fetch.<source>`).

A source's fetch function `fetch(out, params, download_settings)` writes `<out>/<class>/<file>` plus
`manifest.csv`, `summary.json` and `dataset.json` (see pipeline.manifest) and returns a FetchResult.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from pipeline.download import DownloadSettings
from pipeline.manifest import FetchResult
from pipeline.sources import imagenet, synthetic


@dataclass(frozen=True)
class Source:
    fetch: Callable[[Path, BaseModel, DownloadSettings], FetchResult]
    params: type[BaseModel]
    summary: str


SOURCES: dict[str, Source] = {
    "synthetic": Source(synthetic.fetch, synthetic.SyntheticParams, "generated two-class JPEGs, offline"),
    "imagenet": Source(imagenet.fetch, imagenet.ImagenetParams, "ImageNet synsets from URL lists (API mirror or fall11_urls.txt)"),
}
