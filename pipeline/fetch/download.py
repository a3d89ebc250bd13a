"""HTTP for every source: one pooled session, bounded retries, timeouts, size caps, atomic writes.

Two entry points:
- `fetch_bytes(session, url, settings)` gets one small file (an image) into memory and returns a
  `Fetched` whose `error` says what went wrong; it never raises for a bad URL, so a batch of
  thousands records every failure as a value.
- `download_file(session, url, dest, settings, sha256=...)` streams one large file (an archive) to
  disk, resuming a partial file with an HTTP Range request, and raises DownloadError.

Retries (connection errors, 429 honouring Retry-After, 5xx; never 404/410) and redirects are
urllib3's `Retry`; a body cut off mid-transfer is retried here, within the same call.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.core.config import DownloadSettings
from pipeline.core.console import progress
from pipeline.core.errors import PipelineError

CHUNK = 1 << 16
RETRY_STATUSES = (429, 500, 502, 503, 504)


class DownloadError(PipelineError):
    """A file that could not be downloaded (after retries) or failed its checksum."""


@dataclass(frozen=True)
class Fetched:
    url: str
    data: bytes | None  # None when `error` is set
    error: str  # "" when the body arrived whole
    http_status: int | None
    final_url: str
    elapsed_ms: int


def _retry(settings: DownloadSettings) -> Retry:
    """urllib3's retry policy for every client: connection errors, 429 (Retry-After honoured, capped)
    and 5xx are retried with backoff; 404/410 never; redirects count against `max_redirects`."""
    return Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        redirect=settings.max_redirects,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=settings.backoff,
        backoff_max=settings.total_timeout / 4,
        retry_after_max=int(settings.total_timeout / 2),
        respect_retry_after_header=True,
        raise_on_status=False,  # the last 5xx/429 response comes back as a response, not an exception
    )


def make_session(settings: DownloadSettings) -> requests.Session:
    """A session with a connection pool as large as the concurrency and urllib3 retries."""
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.concurrency, max_retries=_retry(settings))
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = settings.max_redirects
    session.headers["User-Agent"] = settings.user_agent
    return session


def check_url(url: str) -> str:
    """'' for an http(s) URL with a host, else the reason it is refused."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "malformed URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"unsupported URL scheme {parts.scheme or '(none)'!r}: only http and https"
    if not parts.hostname:
        return "malformed URL: no host"
    return ""


def _http_error(status: int) -> str:
    return f"HTTP {status}"


def fetch_bytes(session: requests.Session, url: str, settings: DownloadSettings) -> Fetched:
    """GET `url` into memory within the byte cap and the total time cap; errors become values."""
    start = time.monotonic()

    def done(data: bytes | None, error: str, status: int | None = None, final: str = url) -> Fetched:
        return Fetched(url, data, error, status, final, int((time.monotonic() - start) * 1000))

    reason = check_url(url)
    if reason:
        return done(None, reason)
    attempts = settings.retries + 1
    for attempt in range(attempts):
        resp = None
        try:
            with session.get(url, stream=True, timeout=(settings.connect_timeout, settings.read_timeout)) as resp:
                final = resp.url
                if resp.status_code != 200:
                    return done(None, _http_error(resp.status_code), resp.status_code, final)
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > settings.max_bytes:
                    return done(None, f"too large: {int(length)} bytes > {settings.max_bytes}", 200, final)
                body = bytearray()
                # read1 returns whatever has arrived, so a body trickling in just under the read
                # timeout still meets the total-time check below.
                while chunk := _read1(resp):
                    body += chunk
                    if len(body) > settings.max_bytes:
                        return done(None, f"too large: over {settings.max_bytes} bytes", 200, final)
                    if time.monotonic() - start > settings.total_timeout:
                        return done(None, f"timeout: over {settings.total_timeout:g} s", 200, final)
                return done(bytes(body), "", 200, final)
        except requests.TooManyRedirects:
            return done(None, f"too many redirects (> {settings.max_redirects})")
        except requests.exceptions.RetryError as exc:  # urllib3 gave up on 429/5xx
            return done(None, f"gave up after {settings.retries} retries: {_short(exc)}")
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            if time.monotonic() - start >= settings.total_timeout:
                return done(
                    None, f"timeout: over {settings.total_timeout:g} s", resp.status_code if resp is not None else None
                )
            kind = "timeout" if isinstance(exc, requests.Timeout) else "connection error"
            # Before a response, urllib3 has already retried; a body cut off mid-transfer is retried here.
            if resp is None or attempt + 1 == attempts or time.monotonic() - start > settings.total_timeout:
                return done(None, f"{kind}: {_short(exc)}", resp.status_code if resp is not None else None)
            time.sleep(settings.backoff * 2**attempt)
        except requests.RequestException as exc:
            return done(None, f"request error: {_short(exc)}")
    raise AssertionError("unreachable")


def make_pool(settings: DownloadSettings, threads: int | None = None) -> urllib3.PoolManager:
    """urllib3's pool manager with the same retry policy as `make_session`, for `get_bytes`.

    The shard downloader uses urllib3 directly: requests spent 1.5 ms of CPU per image on top of
    it (session merging, hooks, cookies), most of the whole per-image cost (see fetch/shards.py).
    """
    return urllib3.PoolManager(
        num_pools=64,
        maxsize=threads or settings.concurrency,
        retries=_retry(settings),
        timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
        headers={"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate"},
    )


def get_bytes(pool: urllib3.PoolManager, url: str, settings: DownloadSettings) -> Fetched:
    """`fetch_bytes` on urllib3 directly: the same caps, retries, errors and final URL, less CPU."""
    start = time.monotonic()

    def done(data: bytes | None, error: str, status: int | None = None, final: str = url) -> Fetched:
        return Fetched(url, data, error, status, final, int((time.monotonic() - start) * 1000))

    reason = check_url(url)
    if reason:
        return done(None, reason)
    attempts = settings.retries + 1
    for attempt in range(attempts):
        resp = None
        try:
            resp = pool.request("GET", url, preload_content=False, redirect=True)
            try:
                final = _final_url(resp, url)
                if resp.status != 200:
                    return done(None, _http_error(resp.status), resp.status, final)
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > settings.max_bytes:
                    return done(None, f"too large: {int(length)} bytes > {settings.max_bytes}", 200, final)
                body = bytearray()
                while chunk := resp.read1(CHUNK):
                    body += chunk
                    if len(body) > settings.max_bytes:
                        return done(None, f"too large: over {settings.max_bytes} bytes", 200, final)
                    if time.monotonic() - start > settings.total_timeout:
                        return done(None, f"timeout: over {settings.total_timeout:g} s", 200, final)
                if length.isdigit() and len(body) < int(length) and not resp.headers.get("Content-Encoding"):
                    raise urllib3.exceptions.ProtocolError(f"body cut short: {len(body)} of {length} bytes")
                return done(bytes(body), "", 200, final)
            finally:
                _let_go(resp)
        except urllib3.exceptions.MaxRetryError as exc:
            cause = exc.reason
            if isinstance(cause, urllib3.exceptions.ResponseError) and "redirect" in str(cause):
                return done(None, f"too many redirects (> {settings.max_redirects})")
            if isinstance(cause, urllib3.exceptions.ResponseError):
                return done(None, f"gave up after {settings.retries} retries: {_short(cause)}")
            if time.monotonic() - start >= settings.total_timeout:
                return done(None, f"timeout: over {settings.total_timeout:g} s")
            kind = "timeout" if isinstance(cause, (urllib3.exceptions.TimeoutError)) else "connection error"
            return done(None, f"{kind}: {_short(cause or exc)}")
        except (
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.ReadTimeoutError,
            urllib3.exceptions.DecodeError,
            OSError,
        ) as exc:
            status = resp.status if resp is not None else None
            if time.monotonic() - start >= settings.total_timeout:
                return done(None, f"timeout: over {settings.total_timeout:g} s", status)
            kind = "timeout" if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) else "connection error"
            # Before a response, urllib3 has already retried; a body cut off mid-transfer is retried here.
            if resp is None or attempt + 1 == attempts:
                return done(None, f"{kind}: {_short(exc)}", status)
            time.sleep(settings.backoff * 2**attempt)
        except (urllib3.exceptions.HTTPError, ValueError, UnicodeError) as exc:
            return done(None, f"request error: {_short(exc)}")
    raise AssertionError("unreachable")


def _let_go(resp: urllib3.BaseHTTPResponse) -> None:
    """Give the connection back for reuse when what is left of the body is small (an error page),
    else close it: never drain an endless or huge body."""
    length = resp.headers.get("Content-Length", "")
    try:
        if not resp.closed and length.isdigit() and int(length) - resp.tell() <= CHUNK:
            resp.drain_conn()
        elif not resp.closed:
            resp.close()
    except (urllib3.exceptions.HTTPError, OSError):
        resp.close()
    resp.release_conn()


def _final_url(resp: urllib3.BaseHTTPResponse, url: str) -> str:
    """The URL the body came from, after redirects (the Flickr placeholder is known by its name)."""
    history = resp.retries.history if resp.retries is not None else ()
    for entry in reversed(history):
        if entry.redirect_location:
            from urllib.parse import urljoin

            return urljoin(entry.url if "://" in (entry.url or "") else url, entry.redirect_location)
    return url


def _read1(resp: requests.Response) -> bytes:
    try:
        return resp.raw.read1(CHUNK, decode_content=True)
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    session: requests.Session, url: str, dest: Path, settings: DownloadSettings, sha256: str | None = None
) -> Path:
    """Stream `url` to `dest` with a progress bar; resume `<dest>.part` with an HTTP Range request.

    A server that ignores Range (answers 200 instead of 206) restarts the file from scratch. With
    `sha256`, a complete file that does not match is kept as `<dest>.part` for inspection and a
    DownloadError names both hashes. `dest` appears only once complete (atomic rename).
    """
    reason = check_url(url)
    if reason:
        raise DownloadError(f"{url}: {reason}")
    sha256 = sha256.lower() if sha256 else None
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(settings.retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with session.get(
                url, stream=True, headers=headers, timeout=(settings.connect_timeout, settings.read_timeout)
            ) as resp:
                if resp.status_code == 416 and have:  # the part file is already whole
                    break
                if resp.status_code not in (200, 206):
                    raise DownloadError(f"{url}: {_http_error(resp.status_code)}")
                resume = resp.status_code == 206 and have > 0
                total = _total_size(resp, have if resume else 0)
                cap = settings.max_archive_bytes
                too_big = DownloadError(
                    f"{url}: larger than fetch.download.max_archive_bytes ({cap:,} bytes); raise it if this is the right file"
                )
                if total and total > cap:
                    raise too_big
                with open(part, "ab" if resume else "wb") as fh:
                    chunks = progress(
                        resp.iter_content(CHUNK),
                        f"Downloading {dest.name}",
                        total=total and total - (have if resume else 0),
                        size=len,
                    )
                    for chunk in chunks:
                        fh.write(chunk)
                        if fh.tell() > cap:  # an endless or lying body: stop before the disk fills
                            fh.close()
                            part.unlink()
                            raise too_big
                if total and part.stat().st_size < total:
                    raise requests.exceptions.ChunkedEncodingError(f"got {part.stat().st_size} of {total} bytes")
                break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            if attempt == settings.retries:
                raise DownloadError(f"{url}: {_short(exc)} (partial file kept at {part}; rerun to resume)") from None
            time.sleep(settings.backoff * 2**attempt)
        except requests.RequestException as exc:
            raise DownloadError(f"{url}: {_short(exc)}") from None
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256:
            raise DownloadError(
                f"{url}: SHA-256 mismatch: expected {sha256}, got {actual} (file kept at {part} for inspection; delete it to download again)"
            )
    os.replace(part, dest)
    return dest


def _total_size(resp: requests.Response, offset: int) -> int | None:
    """The full file size from Content-Range (206) or Content-Length (200)."""
    content_range = resp.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else None
