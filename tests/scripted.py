"""Test helpers: a scripted HTTP server on 127.0.0.1 (routes to handlers, hits counted), the
images it serves (good JPEGs, Flickr's kind of placeholder, a decompression-bomb header) and the
fast download settings the tests use."""

import io
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from pipeline.fetch.params import DownloadSettings

FAST = DownloadSettings(concurrency=8, connect_timeout=2, read_timeout=1, total_timeout=5, retries=2, backoff=0.01)


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
