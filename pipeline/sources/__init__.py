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
from pipeline.sources import catsdogs, cifar10, folder, imagenet, mnist, synthetic


@dataclass(frozen=True)
class Source:
    fetch: Callable[[Path, BaseModel, DownloadSettings], FetchResult]
    params: type[BaseModel]
    summary: str


SOURCES: dict[str, Source] = {
    "synthetic": Source(synthetic.fetch, synthetic.SyntheticParams, "generated two-class JPEGs, offline"),
    "imagenet": Source(imagenet.fetch, imagenet.ImagenetParams, "ImageNet synsets from URL lists (API mirror or fall11_urls.txt)"),
    "cats-dogs": Source(catsdogs.fetch, catsdogs.CatsDogsParams, "Kaggle cats vs dogs from Microsoft's zip (or --archive FILE)"),
    "mnist": Source(mnist.fetch, mnist.MnistParams, "MNIST digits from the four IDX files, as PNGs"),
    "cifar10": Source(cifar10.fetch, cifar10.Cifar10Params, "CIFAR-10 from the python tarball, as PNGs"),
    "folder": Source(folder.fetch, folder.FolderParams, "a local directory of class subfolders (--path DIR)"),
}
