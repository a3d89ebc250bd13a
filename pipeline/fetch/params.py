"""The fetch stage's params (`fetch` in params.yaml): the source, its own section
(`fetch.<source>`, from the SOURCES registry), the HTTP and image checks of every download
(`fetch.download`), and where and how URL lists are fetched (layout, shards, engine)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.config import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    MAX_SIDE,
    Bytes,
    Pixels,
    RegistrySection,
    Seconds,
    Section,
    between,
    check_choice,
)
from pipeline.core.engine import EngineParams
from pipeline.fetch.sources import SOURCES

AUTO_SHARDS = 50_000  # layout auto: shards above this many candidate URLs, class folders up to it


class DownloadSettings(Section):
    """`fetch.download`: HTTP and image checks for every source that downloads."""

    concurrency: between(0, 1024) = 32
    connect_timeout: Seconds = 5.0  # seconds
    read_timeout: Seconds = 10.0  # seconds between bytes
    total_timeout: Seconds = 60.0  # seconds for one URL, all attempts included: a hard deadline
    retries: between(0, 100, low_inclusive=True) = 3
    backoff: between(0.0, 600.0, float, low_inclusive=True) = 0.5  # seconds, doubled after each retry
    max_redirects: between(0, 100, low_inclusive=True) = 5
    max_bytes: Bytes = MAX_FILE_BYTES  # per image; larger bodies are aborted, never buffered
    max_archive_bytes: Bytes = 10_000_000_000  # per archive (cats-dogs 0.8 GB); an endless body stops here
    user_agent: str = "pipeline (reproducible image datasets)"
    # Image checks applied to every downloaded image (see pipeline.core.images.validate).
    max_pixels: Pixels = MAX_PIXELS  # from the header, before decoding (decompression bombs)
    min_side: between(0, MAX_SIDE) = 16
    placeholder_sha256: list[str] = []  # more "image unavailable" placeholders to reject, besides Flickr's
    # URL-list downloads: decode = decode every image (at 1/8 size for JPEG), ~0.85 ms of CPU per
    # 40 KB JPEG, as much as the HTTP exchange; header = magic bytes, size from the header and an
    # end-of-image check for truncation, no pixel decode (prepare decodes later anyway, and records
    # what fails); auto = header in the shard layout (millions of URLs), decode in class folders.
    verify: Literal["auto", "decode", "header"] = "auto"
    # URLs from a list (a URL-list file, the ImageNet listing) and their redirects reach public
    # addresses only; these networks (CIDRs, e.g. [10.1.2.0/24] for a mirror on the LAN) too.
    allow_networks: list[str] = []

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network; expected CIDRs like 10.1.2.0/24 or ::1/128") from None
        return value


class FetchParams(RegistrySection, EngineParams):
    NAME = "fetch"
    KIND = "source"

    source: str = "synthetic"
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    # Where and how URL-list sources (imagenet) store what they fetch (see pipeline.fetch.collect):
    # folder = <class>/<sha256>.<ext> files + manifest.csv; shards = webdataset tars + parquet
    # manifests; auto = shards above AUTO_SHARDS candidate URLs. Either way one task per shard.
    layout: Literal["auto", "folder", "shards"] = "auto"
    shard_size: between(0, 99_999) = 10_000  # candidate URLs per shard (one task each on `engine`)
    # A rerun checks each finished shard cheaply (its rows, and the tar's size and members against its
    # stats) and fetches again what fails; rehash (`pipeline fetch --verify`) re-hashes every stored
    # image against its row too.
    rehash: bool = False

    @classmethod
    def registry(cls) -> Mapping[str, Any]:
        return SOURCES

    @model_validator(mode="after")
    def _check(self) -> FetchParams:
        check_choice("fetch.source", self.source, SOURCES)
        return self

    def use_shards(self, candidates: int) -> bool:
        """Whether a list of `candidates` URLs is written as shards (`layout`)."""
        return self.layout == "shards" or (self.layout == "auto" and candidates > AUTO_SHARDS)
