"""The one HTTP client of the product: every request it makes (images, archives, the ImageNet
listing) goes through `Client`, and every limit lives here.

- `Client.get(url)` fetches one small file (an image, a listing) into memory and returns a
  `Fetched` whose `error` says what went wrong; it never raises for a bad URL, so a batch of
  thousands records every failure as a value.
- `Client.download(url, dest, sha256=...)` streams one large file (an archive) to disk, resuming a
  partial file with an HTTP Range request, and raises DownloadError.

Destinations: a client for URLs that came from a list (a URL-list file, the ImageNet listing) is
`guarded`: every connection, to the URL's host or to any redirect target, goes only to an address
that `socket.getaddrinfo` gave and that is public (not loopback, private, link-local, multicast,
reserved or unspecified), unless it lies in `fetch.download.allow_networks`; the address checked is
the address connected to (resolved once: no DNS-rebinding gap). A refused URL is a value
(`refused: ...`), never requested. Clients for URLs the user configured (an archive or mirror, the
listing's own URL) are not guarded.

Limits (`fetch.download`): connect and read timeouts (per connection attempt and per read);
`total_timeout`, a hard deadline for one `get` that covers connecting, redirects, retries, their
waits and every byte of headers and body, so a server that drip-feeds one byte at a time cannot
stretch it (a watchdog thread shuts the socket down when it passes); `max_bytes` per image and
`max_archive_bytes` per archive, checked against Content-Length and while streaming; a body shorter
than its Content-Length is an error (retried); retries of connection errors, 429 (Retry-After
honoured, capped) and 5xx with exponential backoff, never 404/410; `max_redirects`.

urllib3 directly, not requests: requests spent 1.5 ms of CPU per image on top of it (session
merging, hooks, cookies), more than the rest of a shard task's work per image.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from pipeline.core.console import progress
from pipeline.core.errors import PipelineError
from pipeline.fetch.params import DownloadSettings

CHUNK = 1 << 16
RETRY_STATUSES = (429, 500, 502, 503, 504)
WATCH_INTERVAL = 0.1  # seconds between the watchdog's looks at the deadlines


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


# --- The hard deadline -----------------------------------------------------------------------


class _Deadline:
    """The deadline of the request this thread is making, and the socket it is using."""

    def __init__(self, at: float):
        self.at = at
        self.sock: socket.socket | None = None
        self.expired = False

    def left(self) -> float:
        return self.at - time.monotonic()

    def expire(self) -> None:
        """Called by the watchdog: a read blocked on the socket returns at once."""
        self.expired = True
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


_current = threading.local()  # .deadline: the _Deadline of this thread's request, if any; .guard: its Guard


def _deadline() -> _Deadline | None:
    return getattr(_current, "deadline", None)


# --- Destinations -----------------------------------------------------------------------------


class DestinationRefused(Exception):
    """A connection this thread's request may not make (not an OSError: urllib3 must not retry it)."""


def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, in the order to try them (tests replace this to inject answers)."""
    return list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def address_kind(ip: str) -> str:
    """What kind of address `ip` is when a fetch may not connect to it ("" for a public one)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "" if address.is_global else "non-global"


@dataclass(frozen=True)
class Guard:
    """Where a guarded request may connect: public addresses, and those in `allowed`."""

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def pick(self, host: str, port: int) -> str:
        """The first address of `host` this request may connect to; DestinationRefused otherwise."""
        addresses = resolve(host, port)  # (a failed lookup is the request's connection error)
        refused = []
        for ip in addresses:
            kind = address_kind(ip)
            if not kind or any(ipaddress.ip_address(ip.split("%", 1)[0]) in net for net in self.allowed):
                return ip
            refused.append(f"{ip} ({kind})")
        raise DestinationRefused(
            f"refused: {host} resolves to {', '.join(refused) or 'no address'}, not a public address "
            "(fetch.download.allow_networks lets chosen networks through)"
        )


def _guard() -> Guard | None:
    return getattr(_current, "guard", None)


class _Watchdog:
    """One thread per process, alive while some request has a deadline: it expires every deadline
    that has passed. Requests register and leave in O(1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[_Deadline] = set()
        self._running = False

    def add(self, deadline: _Deadline) -> None:
        with self._lock:
            self._active.add(deadline)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="http-deadlines", daemon=True).start()

    def remove(self, deadline: _Deadline) -> None:
        with self._lock:
            self._active.discard(deadline)

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            with self._lock:
                if not self._active:
                    self._running = False
                    return
                due = [d for d in self._active if d.at <= now]
                self._active.difference_update(due)
            for deadline in due:
                deadline.expire()


_WATCHDOG = _Watchdog()
# A process forked while the watchdog runs has no such thread: let its first request start one.
os.register_at_fork(after_in_child=lambda: _WATCHDOG.__init__())


class _Watched:
    """A connection that tells this thread's deadline which socket it reads, refuses to start work
    once the deadline has passed (a connection attempt is cut to the time left), and connects only
    where this thread's guard lets it."""

    def _new_conn(self) -> socket.socket:
        guard = _guard()
        if guard is None:
            return super()._new_conn()
        # urllib3 (2.x) connects to `_dns_host`; pinning it to the address just checked means the
        # socket goes exactly there, with no second lookup. TLS still checks the name in `host`.
        named, self._dns_host = self._dns_host, guard.pick(self._dns_host, self.port)
        try:
            return super()._new_conn()
        finally:
            self._dns_host = named

    def connect(self) -> None:
        deadline = _deadline()
        if deadline is not None:
            left = deadline.left()
            if left <= 0:
                raise ConnectTimeoutError(self, "deadline passed (fetch.download.total_timeout)")
            if self.timeout is None or self.timeout > left:
                self.timeout = left
        super().connect()
        if deadline is not None:
            deadline.sock = self.sock

    def getresponse(self, *args, **kwargs):
        deadline = _deadline()
        if deadline is not None:
            if deadline.left() <= 0:
                raise ReadTimeoutError(None, None, "deadline passed (fetch.download.total_timeout)")
            deadline.sock = self.sock
        return super().getresponse(*args, **kwargs)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Retry(Retry):
    """urllib3's Retry, within this thread's deadline: no retry starts after it, no wait (backoff
    or Retry-After) runs past it."""

    def is_exhausted(self) -> bool:
        deadline = _deadline()
        return super().is_exhausted() or (deadline is not None and deadline.left() <= 0)

    def sleep(self, response: urllib3.BaseHTTPResponse | None = None) -> None:
        wait = self.get_retry_after(response) if self.respect_retry_after_header and response is not None else None
        wait = self.get_backoff_time() if wait is None else wait
        deadline = _deadline()
        if deadline is not None:
            wait = min(wait, deadline.left())
        if wait > 0:
            time.sleep(wait)


def _retry(settings: DownloadSettings) -> Retry:
    """The retry policy: connection errors, 429 (Retry-After honoured, capped) and 5xx are retried
    with backoff; 404/410 never; redirects count against `max_redirects`."""
    return _Retry(
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


# --- The client -------------------------------------------------------------------------------


class Client:
    """Pooled connections (`threads` per host, default `fetch.download.concurrency`) with the limits
    of `settings`; safe to share between threads. Close it (or use `with`) when done."""

    def __init__(self, settings: DownloadSettings, threads: int | None = None, guarded: bool = False):
        """`guarded`: for URLs from a list (every connection checked: the module docstring); not for
        the URLs the user configured."""
        self.settings = settings
        allowed = tuple(ipaddress.ip_network(net, strict=False) for net in settings.allow_networks)
        self.guard = Guard(allowed) if guarded else None
        self._pool = urllib3.PoolManager(
            num_pools=64,
            maxsize=max(1, threads or settings.concurrency),
            retries=_retry(settings),
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
            headers={"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate"},
        )
        self._pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.clear()

    def get(self, url: str, fields: Mapping[str, str] | None = None) -> Fetched:
        """GET `url` (with query `fields`) into memory within `max_bytes` and `total_timeout`; every
        problem is a value (`Fetched.error`), never an exception."""
        start = time.monotonic()
        if fields:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(fields)}"
        reason = check_url(url)
        if reason:
            return Fetched(url, None, reason, None, url, 0)
        deadline = _Deadline(start + self.settings.total_timeout)
        _current.deadline, _current.guard = deadline, self.guard
        _WATCHDOG.add(deadline)
        try:
            return self._get(url, start, deadline)
        finally:
            _WATCHDOG.remove(deadline)
            _current.deadline = _current.guard = None

    def _get(self, url: str, start: float, deadline: _Deadline) -> Fetched:
        settings = self.settings
        timeout = f"timeout: over {settings.total_timeout:g} s"

        def done(data: bytes | None, error: str, status: int | None = None, final: str = url) -> Fetched:
            return Fetched(url, data, error, status, final, int((time.monotonic() - start) * 1000))

        attempts = settings.retries + 1
        for attempt in range(attempts):
            resp = None
            try:
                resp = self._pool.request("GET", url, preload_content=False, redirect=True)
                try:
                    final = _final_url(resp, url)
                    if resp.status != 200:
                        return done(None, f"HTTP {resp.status}", resp.status, final)
                    length = resp.headers.get("Content-Length", "")
                    if length.isdigit() and int(length) > settings.max_bytes:
                        return done(None, f"too large: {int(length)} bytes > {settings.max_bytes}", 200, final)
                    body = bytearray()
                    while chunk := resp.read1(CHUNK):
                        body += chunk
                        if len(body) > settings.max_bytes:
                            return done(None, f"too large: over {settings.max_bytes} bytes", 200, final)
                        if deadline.left() <= 0:
                            return done(None, timeout, 200, final)
                    if deadline.expired:
                        return done(None, timeout, 200, final)
                    if length.isdigit() and len(body) < int(length) and not resp.headers.get("Content-Encoding"):
                        raise urllib3.exceptions.ProtocolError(f"body cut short: {len(body)} of {length} bytes")
                    return done(bytes(body), "", 200, final)
                finally:
                    _let_go(resp, deadline.expired)
            except DestinationRefused as exc:
                return done(None, str(exc))
            except urllib3.exceptions.MaxRetryError as exc:
                cause = exc.reason
                if isinstance(cause, urllib3.exceptions.ResponseError) and "redirect" in str(cause):
                    return done(None, f"too many redirects (> {settings.max_redirects})")
                if deadline.expired or deadline.left() <= 0:
                    return done(None, timeout)
                if isinstance(cause, urllib3.exceptions.ResponseError):
                    return done(None, f"gave up after {settings.retries} retries: {_short(cause)}")
                kind = "timeout" if isinstance(cause, urllib3.exceptions.TimeoutError) else "connection error"
                return done(None, f"{kind}: {_short(cause or exc)}")
            except (
                urllib3.exceptions.ProtocolError,
                urllib3.exceptions.ReadTimeoutError,
                urllib3.exceptions.DecodeError,
                OSError,
            ) as exc:  # noqa: E501
                status = resp.status if resp is not None else None
                if deadline.expired or deadline.left() <= 0:
                    return done(None, timeout, status)
                kind = (
                    "timeout" if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError) else "connection error"
                )
                # Before a response, urllib3 has already retried; a body cut off mid-transfer is retried here.
                if resp is None or attempt + 1 == attempts:
                    return done(None, f"{kind}: {_short(exc)}", status)
                time.sleep(max(0.0, min(settings.backoff * 2**attempt, deadline.left())))
            except (urllib3.exceptions.HTTPError, ValueError, UnicodeError) as exc:
                return done(None, f"request error: {_short(exc)}")
        raise AssertionError("unreachable")

    def text(self, url: str, fields: Mapping[str, str] | None = None) -> str:
        """The body of `url` as text (a listing); DownloadError names the URL and what went wrong."""
        got = self.get(url, fields)
        if got.error:
            raise DownloadError(f"{got.url}: {got.error}")
        return got.data.decode("utf-8", errors="replace")

    def download(self, url: str, dest: Path, sha256: str | None = None) -> Path:
        """Stream `url` to `dest` with a progress bar; resume `<dest>.part` with an HTTP Range request.

        A server that ignores Range (answers 200 instead of 206) restarts the file from scratch. With
        `sha256`, a complete file that does not match is kept as `<dest>.part` for inspection and a
        DownloadError names both hashes. `dest` appears only once complete (atomic rename). No total
        deadline (an archive may take an hour), but every read has `read_timeout` and the file
        `max_archive_bytes`.
        """
        settings = self.settings
        reason = check_url(url)
        if reason:
            raise DownloadError(f"{url}: {reason}")
        sha256 = sha256.lower() if sha256 else None
        if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        cap = settings.max_archive_bytes
        too_big = DownloadError(
            f"{url}: larger than fetch.download.max_archive_bytes ({cap:,} bytes); raise it if this is the right file"
        )
        _current.deadline, _current.guard = None, self.guard
        for attempt in range(settings.retries + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            resp = None
            try:
                resp = self._pool.request("GET", url, headers=headers, preload_content=False, redirect=True)
                if resp.status == 416 and have:  # the part file is already whole
                    break
                if resp.status not in (200, 206):
                    raise DownloadError(f"{url}: HTTP {resp.status}")
                resume = resp.status == 206 and have > 0
                total = _total_size(resp, have if resume else 0)
                if total and total > cap:
                    raise too_big
                with open(part, "ab" if resume else "wb") as fh:
                    left = total and total - (have if resume else 0)
                    for chunk in progress(resp.stream(CHUNK), f"Downloading {dest.name}", total=left, size=len):
                        fh.write(chunk)
                        if fh.tell() > cap:  # an endless or lying body: stop before the disk fills
                            fh.close()
                            part.unlink()
                            raise too_big
                if total and part.stat().st_size < total:
                    raise urllib3.exceptions.ProtocolError(f"got {part.stat().st_size} of {total} bytes")
                break
            except DestinationRefused as exc:
                raise DownloadError(f"{url}: {exc}") from None
            except urllib3.exceptions.MaxRetryError as exc:
                raise DownloadError(f"{url}: {_short(exc.reason or exc)}") from None
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, OSError) as exc:
                if attempt == settings.retries:
                    raise DownloadError(
                        f"{url}: {_short(exc)} (partial file kept at {part}; rerun to resume)"
                    ) from None
                time.sleep(settings.backoff * 2**attempt)
            except urllib3.exceptions.HTTPError as exc:
                raise DownloadError(f"{url}: {_short(exc)}") from None
            finally:
                if resp is not None:
                    _let_go(resp, True)
        if sha256 is not None:
            actual = sha256_file(part)
            if actual != sha256:
                raise DownloadError(
                    f"{url}: SHA-256 mismatch: expected {sha256}, got {actual} "
                    f"(file kept at {part} for inspection; delete it to download again)"
                )
        os.replace(part, dest)
        return dest


def _let_go(resp: urllib3.BaseHTTPResponse, close: bool = False) -> None:
    """Give the connection back for reuse when what is left of the body is small (an error page),
    else close it: never drain an endless or huge body, nor reuse a socket the watchdog shut."""
    length = resp.headers.get("Content-Length", "")
    try:
        if not close and not resp.closed and length.isdigit() and int(length) - resp.tell() <= CHUNK:
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
            return urljoin(entry.url if "://" in (entry.url or "") else url, entry.redirect_location)
    return url


def _total_size(resp: urllib3.BaseHTTPResponse, offset: int) -> int | None:
    """The full file size from Content-Range (206) or Content-Length (200)."""
    content_range = resp.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
