"""The registry of data sources: each source's typed params (`fetch.<source>`) and the module that
fetches it.

A source module's `fetch(out, params, download_settings)` writes `<out>/<class>/<file>` plus
`manifest.csv`, `summary.json` and `dataset.json` (see pipeline.fetch.manifest) and returns a
FetchResult. The params live here, not in the source modules: the config loader validates them
without importing what fetching needs (HTTP clients, OpenCV, pandas). A new source is a module in
this folder, its params class and one registry line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, NonNegativeInt, PositiveInt, field_validator

from pipeline.core.config import DownloadSettings, Section, Sha256


class SyntheticParams(Section):
    per_class: PositiveInt = 1000
    seed: int = 0


IMAGENET_API = "http://www.image-net.org/api/text/imagenet.synset.geturls"  # closed on 2021-03-11: use a mirror


class ImagenetParams(Section):
    wnids: list[str] = ["n04194289", "n02834778"]
    per_class: PositiveInt = 100  # training images per class (seed 001)
    val_per_class: NonNegativeInt = 50
    api_url: str = IMAGENET_API
    url_list: str | None = None  # a fall11_urls.txt-style file instead of the API

    @field_validator("wnids")
    @classmethod
    def _wnids(cls, value: list[str]) -> list[str]:
        bad = [w for w in value if not (len(w) == 9 and w[0] == "n" and w[1:].isdigit())]
        if bad or not value:
            raise ValueError(f"expected WordNet ids like n04194289, got {bad or value}")
        return value


class CatsDogsParams(Section):
    url: str = "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
    archive: Optional[str] = None  # a zip already on disk: read in place, nothing downloaded
    sha256: Optional[Sha256] = None  # pin for the zip (downloaded or given); none by default, "" = none
    download_dir: Optional[str] = None  # download cache [default: <out>/../downloads]
    max_member_bytes: PositiveInt = 50_000_000  # larger members are refused
    max_total_bytes: PositiveInt = 4_000_000_000  # larger archives are an error (the real one: ~825 MB)


# SHA-256 of the published MNIST files (9,912,422 / 28,881 / 1,648,877 / 4,542 bytes), as pinned by
# TFDS, torchvision's mirrors and others.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


class MnistParams(Section):
    url: str = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # base URL of the four files (a trailing / is added if missing)
    sha256: dict[str, Sha256] = MNIST_SHA256  # file -> pin; a file not listed is not checked
    download_dir: Optional[str] = None  # download cache [default: <out>/../downloads]

    @field_validator("sha256")
    @classmethod
    def _known_files(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(MNIST_SHA256))
        if unknown:
            raise ValueError(f"unknown file(s) {', '.join(unknown)}; valid: {', '.join(MNIST_SHA256)}")
        return value


CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"  # 170,498,071 bytes


class Cifar10Params(Section):
    url: str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # or a base URL ending in / to which cifar-10-python.tar.gz is added
    sha256: Optional[Sha256] = CIFAR10_SHA256  # "" or null: no check
    download_dir: Optional[str] = None  # download cache [default: <out>/../downloads]
    max_member_bytes: PositiveInt = 100_000_000  # each batch is 31 MB
    max_total_bytes: PositiveInt = 1_000_000_000  # the whole tarball expands to 185 MB


class FolderParams(Section):
    path: str = ""  # the directory of class subfolders (required)
    max_file_bytes: PositiveInt = 50_000_000  # larger files are skipped unread


@dataclass(frozen=True)
class Source:
    module: str  # pipeline.fetch.sources.<module> has fetch(out, params, download_settings)
    params: type[BaseModel]
    summary: str

    def parse(self, raw: dict) -> BaseModel:
        return self.params.model_validate(raw)

    def fetch(self, out: Path, params: BaseModel, download: DownloadSettings):
        """Import the source's module (only now: it needs what fetching needs) and fetch."""
        return importlib.import_module(f"{__name__}.{self.module}").fetch(out, params, download)


SOURCES: dict[str, Source] = {
    "synthetic": Source("synthetic", SyntheticParams, "generated two-class JPEGs, offline"),
    "imagenet": Source("imagenet", ImagenetParams, "ImageNet synsets from URL lists (API mirror or fall11_urls.txt)"),
    "cats-dogs": Source("catsdogs", CatsDogsParams, "Kaggle cats vs dogs from Microsoft's zip (or --archive FILE)"),
    "mnist": Source("mnist", MnistParams, "MNIST digits from the four IDX files, as PNGs"),
    "cifar10": Source("cifar10", Cifar10Params, "CIFAR-10 from the python tarball, as PNGs"),
    "folder": Source("folder", FolderParams, "a local directory of class subfolders (--path DIR)"),
}
