"""The registry of data sources: each source's typed params (`fetch.<source>`) and the module that
fetches it.

A source module's `fetch(out, params, cfg)` (its own params, and the whole `fetch` section for the
download settings, layout and engine) writes a fetched dataset in `out` (the format of
pipeline.core.dataset: `<class>/<file>` and `manifest.csv`, or shards; `summary.json`,
`dataset.json`) and returns a FetchResult; pipeline.fetch.stage runs it safely. The params live
here, not in the source modules: the config loader validates them without importing what fetching
needs (HTTP clients, OpenCV, pandas). A new source is a module in this folder, its params class and
one registry line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from pipeline.core.config import MAX_FILE_BYTES, Bytes, Count, Section, Sha256


class SyntheticParams(Section):
    per_class: Count = 1000
    seed: int = 0


IMAGENET_API = "http://www.image-net.org/api/text/imagenet.synset.geturls"  # closed on 2021-03-11: use a mirror


class ImagenetParams(Section):
    wnids: list[str] = ["n04194289", "n02834778"]
    per_class: Count = 100  # training images per class (seed 001)
    val_per_class: Annotated[int, Field(ge=0, le=10**9)] = 50
    api_url: str = IMAGENET_API
    url_list: str | None = None  # a fall11_urls.txt-style file instead of the API
    wnids_file: str | None = None  # one wnid per line (# comments): replaces `wnids` (21,841 ids exceed argv)
    max_line_bytes: Bytes = 8192  # a longer line of a URL list (or of the API's answer) is skipped, counted

    @field_validator("wnids")
    @classmethod
    def _wnids(cls, value: list[str]) -> list[str]:
        bad = [w for w in value if not (len(w) == 9 and w[0] == "n" and w[1:].isdigit())]
        if bad or not value:
            raise ValueError(f"expected WordNet ids like n04194289, got {bad or value}")
        return value


class CatsDogsParams(Section):
    url: str = (
        "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
    )
    archive: str | None = None  # a zip already on disk: read in place, nothing downloaded
    sha256: Sha256 | None = None  # pin for the zip (downloaded or given); none by default, "" = none
    download_dir: str | None = None  # download cache [default: <out>/../downloads]
    max_member_bytes: Bytes = MAX_FILE_BYTES  # larger members are refused
    max_total_bytes: Bytes = 4_000_000_000  # larger archives are an error (the real one: ~825 MB)


# SHA-256 of the published MNIST files (9,912,422 / 28,881 / 1,648,877 / 4,542 bytes), as pinned by
# TFDS, torchvision's mirrors and others.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


class MnistParams(Section):
    # base URL of the four files (a trailing / is added if missing)
    url: str = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    sha256: dict[str, Sha256] = MNIST_SHA256  # file -> pin; a file not listed is not checked
    download_dir: str | None = None  # download cache [default: <out>/../downloads]

    @field_validator("sha256")
    @classmethod
    def _known_files(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(MNIST_SHA256))
        if unknown:
            raise ValueError(f"unknown file(s) {', '.join(unknown)}; valid: {', '.join(MNIST_SHA256)}")
        return value


CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"  # 170,498,071 bytes


class Cifar10Params(Section):
    # the tarball, or a base URL ending in / to which cifar-10-python.tar.gz is added
    url: str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    sha256: Sha256 | None = CIFAR10_SHA256  # "" or null: no check
    download_dir: str | None = None  # download cache [default: <out>/../downloads]
    max_member_bytes: Bytes = 100_000_000  # each batch is 31 MB
    max_total_bytes: Bytes = 1_000_000_000  # the whole tarball expands to 185 MB


class FolderParams(Section):
    path: str = ""  # the directory of class subfolders (required)
    max_file_bytes: Bytes = MAX_FILE_BYTES  # larger files are skipped unread


class WebdatasetParams(Section):
    # the tars: a .tar (.tar.gz, .tgz) file, a folder of them, a glob (shards/*.tar), a brace pattern
    # (shards/{00000..00099}.tar) or http(s) URLs of tars, which may use braces too (required)
    path: str = ""
    # where each sample's class is: cls = <key>.cls, an integer index (names from a dataset.json beside
    # the tars); txt = <key>.txt, the text itself (a caption); json:<field> = a field of <key>.json
    label: str = "cls"
    download_dir: str | None = None  # cache of tars fetched from URLs [default: <out>/../downloads]
    max_member_bytes: Bytes = MAX_FILE_BYTES  # larger members (and sidecar files) are refused
    max_total_bytes: Bytes = 100_000_000_000  # bytes of members read from all the tars together
    max_members: Count = 3_000_000  # members of all the tars together (img2dataset: 3 a sample)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        kind, sep, field = value.partition(":")
        if value in ("cls", "txt") or (kind == "json" and sep and field.strip()):
            return value
        raise ValueError(f"unknown label {value!r}; valid choices: cls, txt or json:<field> (e.g. json:label)")


@dataclass(frozen=True)
class Source:
    module: str  # pipeline.fetch.sources.<module> has fetch(out, params, cfg) and may have check(out, params)
    params: type[BaseModel]
    summary: str

    def parse(self, raw: dict) -> BaseModel:
        return self.params.model_validate(raw)

    def load(self) -> ModuleType:
        """The source's module, imported only now: it needs what fetching needs."""
        return importlib.import_module(f"{__name__}.{self.module}")


SOURCES: dict[str, Source] = {
    "synthetic": Source("synthetic", SyntheticParams, "generated two-class JPEGs, offline"),
    "imagenet": Source("imagenet", ImagenetParams, "ImageNet synsets from URL lists (API mirror or fall11_urls.txt)"),
    "cats-dogs": Source("catsdogs", CatsDogsParams, "Kaggle cats vs dogs from Microsoft's zip (or --archive FILE)"),
    "mnist": Source("mnist", MnistParams, "MNIST digits from the four IDX files, as PNGs"),
    "cifar10": Source("cifar10", Cifar10Params, "CIFAR-10 from the python tarball, as PNGs"),
    "folder": Source("folder", FolderParams, "a local directory of class subfolders (--path DIR)"),
    "webdataset": Source("webdataset", WebdatasetParams, "existing webdataset / img2dataset tars (--path TARS)"),
}
