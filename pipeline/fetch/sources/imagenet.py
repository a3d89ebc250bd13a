"""ImageNet synsets from URL lists (seed 001: ships n04194289 and bikes n02834778).

The lists come from the synset API (`GET <api_url>?wnid=<wnid>`, one URL per line in plain text or
HTML, parsed with BeautifulSoup as seed 001 did) or from a `fall11_urls.txt`-style file
(`<wnid>_<n><TAB><url>` per line, optionally gzipped). image-net.org closed the API on 2021-03-11;
the same lists live on in mirrors, hence the configurable base URL. Classes are the wnids.

Either list is read a line at a time, each line at most `max_line_bytes` (a longer one is never
held whole: it is skipped and counted, and a list of nothing but such lines is an error), and a
gzipped file cut short or corrupt is one error naming it.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path

from bs4 import BeautifulSoup

from pipeline.core.errors import ConfigError, InputError, PipelineError
from pipeline.fetch.collect import Quota, fetch_urls
from pipeline.fetch.http import Client, check_url
from pipeline.fetch.manifest import FetchResult
from pipeline.fetch.params import DownloadSettings, FetchParams
from pipeline.fetch.sources import ImagenetParams


class SourceUnavailable(PipelineError):
    """The URL-list API could not be reached or answered an error."""


def parse_url_lines(text: str) -> list[str]:
    """URLs from an API body: plain text or HTML, one per line; blank lines dropped."""
    body = BeautifulSoup(text, "html.parser").get_text("\n") if "<" in text[:1000] else text
    return [line.strip() for line in body.splitlines() if line.strip()]


class Lines:
    """The lines of a list, each at most `cap` bytes: longer ones are skipped unread past the cap and
    counted (`too_long`); `read` of all of them, of none."""

    def __init__(self, what: str, cap: int):
        self.what, self.cap, self.read, self.too_long = what, cap, 0, 0

    def of(self, stream: io.BufferedIOBase) -> Iterator[str]:
        while line := stream.readline(self.cap + 1):
            self.read += 1
            if len(line) > self.cap and not line.endswith(b"\n"):
                self.too_long += 1
                while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
                    pass
                continue
            yield line.decode("utf-8", errors="replace")

    def warnings(self) -> list[str]:
        """After reading: a warning for the lines skipped; an error when no line was short enough."""
        if self.too_long and self.too_long == self.read:
            raise InputError(
                f"{self.what}: every line ({self.read:,}) is over {self.cap:,} bytes "
                "(fetch.imagenet.max_line_bytes): not a URL list"
            )
        if self.too_long:
            lines = "line" if self.too_long == 1 else "lines"
            limit = f"{self.cap:,} bytes skipped (fetch.imagenet.max_line_bytes)"
            return [f"{self.what}: {self.too_long:,} {lines} over {limit}"]
        return []


def iter_api(api_url: str, wnids: list[str], settings: DownloadSettings, lines: Lines) -> Iterator[tuple[str, str]]:
    """(wnid, url) rows from the synset API, one request per wnid, in wnid order (the API's own URL
    is the user's choice: its client is not guarded; the listed URLs are, when fetched)."""
    reason = check_url(api_url)
    if reason:
        raise ConfigError(f"fetch.imagenet.api_url {api_url!r}: {reason}")
    hint = "point --api-url at a mirror or use --url-list FILE"
    with Client(settings, threads=1) as client:
        for wnid in wnids:
            got = client.get(api_url, {"wnid": wnid})
            if got.http_status and got.error.startswith("HTTP"):
                raise SourceUnavailable(f"URL-list API {got.url} answered HTTP {got.http_status}; {hint}")
            if got.error:
                raise SourceUnavailable(f"URL-list API unreachable: {api_url} ({got.error}); {hint}")
            body = "".join(lines.of(io.BytesIO(got.data)))
            for url in parse_url_lines(body):
                yield wnid, url


def iter_url_file(path: Path, wnids: list[str], lines: Lines | None = None) -> Iterator[tuple[str, str]]:
    """Stream (wnid, url) rows of the wanted wnids from a fall11_urls.txt-style file (1 GB, 14.2M
    lines for all of ImageNet; gzipped or not), in file order, holding one line at a time."""
    if not path.is_file():
        raise InputError(f"URL list not found: {path}")
    lines = lines or Lines(f"URL list {path}", ImagenetParams().max_line_bytes)
    wanted = set(wnids)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
            for line in lines.of(fh):
                key, sep, url = line.rstrip("\r\n").partition("\t")
                wnid = key.split("_", 1)[0]
                if sep and wnid in wanted:
                    yield wnid, url.strip()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"URL list {path} is cut short or corrupt ({exc}): download it again") from None


def read_wnids_file(path: Path) -> list[str]:
    """One wnid per line; blank lines and `#` comments ignored; duplicates kept once, first place."""
    where = f"fetch.imagenet.wnids_file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{where}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read it ({exc})") from None
    wnids = []
    for number, line in enumerate(text.splitlines(), 1):
        wnid = line.split("#", 1)[0].strip()
        if not wnid:
            continue
        if not (len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit()):
            raise InputError(f"{where}, line {number}: {wnid!r} is not a WordNet id like n04194289")
        wnids.append(wnid)
    if not wnids:
        raise InputError(f"{where}: no wnid in it (one per line, like n04194289)")
    return list(dict.fromkeys(wnids))


def wanted_wnids(params: ImagenetParams) -> list[str]:
    """The classes: the wnids file when one is given, else `wnids`."""
    return read_wnids_file(Path(params.wnids_file)) if params.wnids_file else params.wnids


def check(out: Path, params: ImagenetParams) -> None:
    """Before anything is written: a bad wnids file or a missing URL list is one clear error."""
    wanted_wnids(params)
    if params.url_list and not Path(params.url_list).is_file():
        raise InputError(f"URL list not found: {params.url_list}")


def fetch(out: Path, params: ImagenetParams, cfg: FetchParams) -> FetchResult:
    """The wnids' URL lists (API or file, streamed), fetched in waves of shards (pipeline.fetch.collect)."""
    wnids = wanted_wnids(params)
    if params.url_list:
        lines = Lines(f"URL list {params.url_list}", params.max_line_bytes)
        rows = iter_url_file(Path(params.url_list), wnids, lines)
    else:
        lines = Lines(f"URL-list API {params.api_url}", params.max_line_bytes)
        rows = iter_api(params.api_url, wnids, cfg.download, lines)
    quotas = {wnid: Quota(params.per_class, params.val_per_class) for wnid in wnids}
    return fetch_urls(rows, quotas, out, cfg, "imagenet", lines.warnings)
