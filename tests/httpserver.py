"""A small local HTTP file server for tests: 127.0.0.1, an ephemeral port, no internet.

    with FileServer({"/x.zip": data}) as server:
        url = server.url("/x.zip")
        server.fail("/x.zip", Failure("cut", after=1000))   # the next GET of /x.zip is cut mid-body
        ...
        server.bytes_sent("/x.zip"), server.log             # what was served, request by request

Serves GET with HTTP/1.1 keep-alive and Content-Length; honours `Range: bytes=N-` / `bytes=N-M` with
206 + Content-Range (416 past the end) unless `ranges=False`, when it answers 200 with the whole
file as a server that ignores Range does. Injected failures apply to the next requests of a path,
first in, first out: `status` (e.g. 503 with headers such as Retry-After, or 404), `cut` (send the
headers and `after` body bytes, then drop the connection), `delay` (sleep, then serve normally).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Failure:
    kind: Literal["status", "cut", "delay"]
    status: int = 503  # for "status"
    after: int = 0  # for "cut": body bytes sent before the connection drops
    seconds: float = 0.0  # for "delay"
    headers: dict[str, str] = field(default_factory=dict)  # for "status", e.g. {"Retry-After": "1"}


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None  # the Range header as sent
    status: int
    sent: int  # body bytes actually written


class FileServer:
    def __init__(
        self, files: dict[str, bytes] | None = None, ranges: bool = True, content_type: str = "application/octet-stream"
    ):
        self.files: dict[str, bytes] = dict(files or {})
        self.ranges = ranges
        self.content_type = content_type
        self.log: list[Request] = []
        self._failures: dict[str, list[Failure]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- control ---------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def fail(self, path: str, *failures: Failure) -> None:
        """Apply `failures` to the next requests of `path`, one per request, in order."""
        with self._lock:
            self._failures.setdefault(path, []).extend(failures)

    def bytes_sent(self, path: str | None = None) -> int:
        with self._lock:
            return sum(r.sent for r in self.log if path is None or r.path == path)

    def requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.log if path is None or r.path == path]

    def __enter__(self) -> FileServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- serving -------------------------------------------------------------------------------

    def _next_failure(self, path: str) -> Failure | None:
        with self._lock:
            queue = self._failures.get(path)
            return queue.pop(0) if queue else None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                range_header = self.headers.get("Range")
                failure = server._next_failure(path)
                if failure and failure.kind == "delay":
                    time.sleep(failure.seconds)
                    failure = None
                if failure and failure.kind == "status":
                    return self._reply(path, range_header, failure.status, b"error\n", failure.headers)
                data = server.files.get(path)
                if data is None:
                    return self._reply(path, range_header, 404, b"not found\n")
                status, body, headers = 200, data, {}
                match = _RANGE.match(range_header or "")
                if server.ranges and match:
                    start = int(match[1])
                    end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
                    if start >= len(data):
                        return self._reply(path, range_header, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    status, body = 206, data[start : end + 1]
                    headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
                if failure and failure.kind == "cut":
                    return self._cut(path, range_header, status, body, headers, failure.after)
                self._reply(path, range_header, status, body, headers)

            def _start(self, status: int, length: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()

            def _reply(
                self,
                path: str,
                range_header: str | None,
                status: int,
                body: bytes,
                headers: dict[str, str] | None = None,
            ) -> None:
                self._start(status, len(body), headers or {})
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                server._record(Request(path, range_header, status, len(body)))

            def _cut(
                self, path: str, range_header: str | None, status: int, body: bytes, headers: dict[str, str], after: int
            ) -> None:
                """Promise the whole body, send `after` bytes of it, then drop the connection."""
                self._start(status, len(body), headers)
                self.wfile.write(body[:after])
                self.wfile.flush()
                server._record(Request(path, range_header, status, min(after, len(body))))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        return Handler
