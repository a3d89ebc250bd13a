"""Test helpers: a scripted HTTP server on 127.0.0.1 (routes to handlers, hits counted), the
images it serves (good JPEGs, Flickr's kind of placeholder, a decompression-bomb header) and the
fast download settings the tests use."""

import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from pipeline.fetch.params import DownloadSettings

# Fetches of URL lists reach public addresses only: the tests' servers on 127.0.0.1 are let through.
LOOPBACK = ["127.0.0.1/32"]
ALLOW_LOOPBACK = ["-S", "fetch.download.allow_networks=[127.0.0.1/32]"]  # the same, on the command line
FAST = DownloadSettings(
    concurrency=8, connect_timeout=2, read_timeout=1, total_timeout=5, retries=2, backoff=0.01, allow_networks=LOOPBACK
)


def jpeg(seed: int, size=(40, 60)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Server:
    """Routes path -> handler(request) on a threading server; counts hits per path."""

    def __init__(self):
        self.routes = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                route = server.routes.get(path) or server.routes.get(self.path)
                if route is None:
                    return self.reply(404, b"not found", "text/plain")
                route(self)

            def reply(self, status, body=b"", ctype="application/octet-stream", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers:
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def file(self, path, body, ctype="image/jpeg"):
        self.routes[path] = lambda h: h.reply(200, body, ctype)
        return self.url + path


def placeholder_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (500, 374), (240, 240, 240)).save(buf, "PNG")
    return buf.getvalue()


def big_header_png() -> bytes:
    """A valid-looking PNG header claiming 100,000 x 100,000 pixels, with no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def drip(h, head: bytes, body: bytes, every: float = 0.2, limit: float = 20.0):
    """Send `head` byte by byte, then `body`, one byte every `every` seconds (a server that never
    stalls long enough for a read timeout), until the client hangs up or `limit` passes."""
    end = time.monotonic() + limit
    try:
        for byte in head + body:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(every)
            if time.monotonic() > end:
                return
    except OSError:  # the client hung up: what the test wants
        return


class Listener:
    """A TCP listener on `host` (a loopback address) that accepts and counts connections and never
    answers: what a test points a refused destination, or a fake scheduler, at."""

    def __init__(self, host: str = "127.0.0.1"):
        import socket

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:  # closed
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()
