"""ImageNet synsets from URL lists (seed 001: ships n04194289 and bikes n02834778).

The lists come from the synset API (`GET <api_url>?wnid=<wnid>`, one URL per line in plain text or
HTML, parsed with BeautifulSoup as seed 001 did) or from a `fall11_urls.txt`-style file
(`<wnid>_<n><TAB><url>` per line, optionally gzipped). image-net.org closed the API on 2021-03-11;
the same lists live on in mirrors, hence the configurable base URL. Classes are the wnids.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import requests
from bs4 import BeautifulSoup

from pipeline.fetch.collect import Quota, collect
from pipeline.fetch.download import check_url, make_session
from pipeline.core.errors import ConfigError, InputError, PipelineError
from pipeline.fetch.manifest import FetchResult
from pipeline.core.config import DownloadSettings
from pipeline.fetch.sources import ImagenetParams

class SourceUnavailable(PipelineError):
    """The URL-list API could not be reached or answered an error."""


def parse_url_lines(text: str) -> list[str]:
    """URLs from an API body: plain text or HTML, one per line; blank lines dropped."""
    body = BeautifulSoup(text, "html.parser").get_text("\n") if "<" in text[:1000] else text
    return [line.strip() for line in body.splitlines() if line.strip()]


def urls_from_api(api_url: str, wnids: list[str], settings: DownloadSettings) -> dict[str, list[str]]:
    reason = check_url(api_url)
    if reason:
        raise ConfigError(f"fetch.imagenet.api_url {api_url!r}: {reason}")
    session = make_session(settings)
    lists = {}
    for wnid in wnids:
        try:
            resp = session.get(api_url, params={"wnid": wnid}, timeout=(settings.connect_timeout, settings.read_timeout))
        except requests.RequestException as exc:
            raise SourceUnavailable(f"URL-list API unreachable: {api_url} ({type(exc).__name__}); point --api-url at a mirror or use --url-list FILE") from None
        if resp.status_code != 200:
            raise SourceUnavailable(f"URL-list API {resp.url} answered HTTP {resp.status_code}; point --api-url at a mirror or use --url-list FILE")
        lists[wnid] = parse_url_lines(resp.text)
    return lists


def urls_from_file(path: Path, wnids: list[str]) -> dict[str, list[str]]:
    """Stream a fall11_urls.txt-style file (1 GB for all of ImageNet), keeping the wanted wnids."""
    if not path.is_file():
        raise InputError(f"URL list not found: {path}")
    wanted = {wnid: [] for wnid in wnids}
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, sep, url = line.rstrip("\r\n").partition("\t")
            wnid = key.split("_", 1)[0]
            if sep and wnid in wanted:
                wanted[wnid].append(url.strip())
    return wanted


def fetch(out: Path, params: ImagenetParams, download: DownloadSettings) -> FetchResult:
    lists = urls_from_file(Path(params.url_list), params.wnids) if params.url_list else urls_from_api(params.api_url, params.wnids, download)
    quotas = {wnid: Quota(params.per_class, params.val_per_class) for wnid in params.wnids}
    return collect(lists, quotas, out, download, "imagenet")
