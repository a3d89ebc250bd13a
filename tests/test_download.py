"""The image downloader and the imagenet source against a scripted server on 127.0.0.1."""

import gzip
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.fetch.checks import FLICKR_PLACEHOLDER_MD5
from pipeline.fetch.collect import Quota, fetch_urls
from pipeline.fetch.http import Client
from pipeline.fetch.params import DownloadSettings, FetchParams
from pipeline.fetch.sources.imagenet import iter_url_file, parse_url_lines
from tests.conftest import kill_at, run_cli

FAST = DownloadSettings(concurrency=8, connect_timeout=2, read_timeout=1, total_timeout=5, retries=2, backoff=0.01)


def collect(candidates: dict[str, list[str]], quotas: dict[str, Quota], out, settings: DownloadSettings, source: str):
    """Each class's candidate URLs fetched into the folder layout (pipeline.fetch.collect)."""
    rows = [(cls, url) for cls, urls in candidates.items() for url in urls]
    return fetch_urls(rows, quotas, out, FetchParams(layout="folder", download=settings), source)


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
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def file(self, path, body, ctype="image/jpeg"):
        self.routes[path] = lambda h: h.reply(200, body, ctype)
        return self.url + path


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.httpd.shutdown()


def test_ok_and_http_errors(server):
    client = Client(FAST)
    ok = client.get(server.file("/a.jpg", jpeg(1)))
    assert ok.error == "" and ok.data == jpeg(1) and ok.http_status == 200
    missing = client.get(server.url + "/missing.jpg")
    assert missing.error == "HTTP 404" and server.hits["/missing.jpg"] == 1  # 404 is never retried


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "not a url", "http://", "javascript:alert(1)"]
)
def test_only_http_urls(url):
    got = Client(FAST).get(url)
    assert got.data is None and ("scheme" in got.error or "malformed" in got.error)


def test_retry_5xx_then_success(server):
    state = {"n": 0}

    def flaky(h):
        state["n"] += 1
        h.reply(503, b"busy") if state["n"] <= 2 else h.reply(200, jpeg(2), "image/jpeg")

    server.routes["/flaky.jpg"] = flaky
    got = Client(FAST).get(server.url + "/flaky.jpg")
    assert got.error == "" and got.data == jpeg(2) and state["n"] == 3


def test_429_honours_retry_after(server):
    state = {"n": 0}

    def limited(h):
        state["n"] += 1
        h.reply(429, b"slow down", headers=[("Retry-After", "1")]) if state["n"] == 1 else h.reply(200, jpeg(3))

    server.routes["/limited.jpg"] = limited
    start = time.monotonic()
    got = Client(FAST).get(server.url + "/limited.jpg")
    assert got.error == "" and state["n"] == 2
    assert time.monotonic() - start >= 0.9  # waited as told, although the backoff is 0.01 s


def test_gives_up_after_bounded_retries(server):
    server.routes["/down.jpg"] = lambda h: h.reply(500, b"error")
    got = Client(FAST).get(server.url + "/down.jpg")
    assert got.data is None and server.hits["/down.jpg"] == FAST.retries + 1


def test_slow_server_times_out_within_bounds(server):
    def stalls(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"\xff\xd8\xff")
        h.wfile.flush()
        time.sleep(5)

    server.routes["/slow.jpg"] = stalls
    start = time.monotonic()
    got = Client(FAST).get(server.url + "/slow.jpg")
    elapsed = time.monotonic() - start
    assert got.data is None and ("timeout" in got.error or "connection" in got.error)
    assert elapsed < FAST.total_timeout + 2 * FAST.read_timeout


def test_trickling_body_stops_at_total_timeout(server):
    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(200):
            h.wfile.write(b"x" * 10)
            h.wfile.flush()
            time.sleep(0.05)

    server.routes["/trickle.jpg"] = trickle
    settings = FAST.model_copy(update={"total_timeout": 1.0})
    start = time.monotonic()
    got = Client(settings).get(server.url + "/trickle.jpg")
    assert got.error.startswith("timeout") and time.monotonic() - start < 3


def test_dropped_connection_mid_body_is_retried(server):
    body, state = jpeg(4), {"n": 0}

    def drops_once(h):
        state["n"] += 1
        if state["n"] == 1:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[:100])
            h.wfile.flush()
            h.connection.shutdown(2)
            return
        h.reply(200, body)

    server.routes["/drop.jpg"] = drops_once
    got = Client(FAST).get(server.url + "/drop.jpg")
    assert got.error == "" and got.data == body and state["n"] == 2


def test_byte_cap_aborts_without_buffering(server):
    server.file("/huge.jpg", b"\xff\xd8\xff" + b"0" * 300_000)
    settings = FAST.model_copy(update={"max_bytes": 100_000})
    got = Client(settings).get(server.url + "/huge.jpg")
    assert got.data is None and got.error.startswith("too large")

    def no_length(h):  # chunked, no Content-Length: the stream itself is cut at the cap
        h.send_response(200)
        h.end_headers()
        h.wfile.write(b"0" * 300_000)

    server.routes["/stream.jpg"] = no_length
    got = Client(settings).get(server.url + "/stream.jpg")
    assert got.data is None and got.error.startswith("too large")


def test_redirect_limit(server):
    server.routes["/loop"] = lambda h: h.reply(302, headers=[("Location", "/loop")])
    got = Client(FAST).get(server.url + "/loop")
    assert got.data is None and "redirect" in got.error


def placeholder_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (500, 374), (240, 240, 240)).save(buf, "PNG")
    return buf.getvalue()


def test_collect_records_every_url_with_a_reason(server, tmp_path):
    good = [server.file(f"/g{i}.jpg", jpeg(i)) for i in range(4)]
    dup = server.file("/dup.jpg", jpeg(0))  # same bytes as g0
    html = server.file("/html.jpg", b"<!DOCTYPE html><html><body>Not found</body></html>", "text/html")
    trunc = server.file("/trunc.jpg", jpeg(9, (200, 300))[:800])
    tiny = server.file("/tiny.jpg", jpeg(10, (8, 8)))
    server.file("/photo_unavailable.png", placeholder_png(), "image/png")
    server.routes["/gone.jpg"] = lambda h: h.reply(302, headers=[("Location", "/photo_unavailable.png")])
    custom = server.file("/custom.png", placeholder_png(), "image/png")
    bomb = server.file("/bomb.png", big_header_png())
    candidates = {
        "n00000001": [
            good[0],
            dup,
            html,
            server.url + "/gone.jpg",
            good[1],
            "ftp://x/y.jpg",
            trunc,
            tiny,
            bomb,
            server.url + "/404.jpg",
            good[2],
            good[3],
            custom,
        ]
    }
    settings = FAST.model_copy(
        update={"placeholder_sha256": [hashlib.sha256(placeholder_png()).hexdigest()], "max_pixels": 10_000_000}
    )
    result = collect(candidates, {"n00000001": Quota(2, 1)}, tmp_path, settings, "imagenet")
    manifest = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    rows = {row.url: row for row in manifest.itertuples()}
    assert rows[good[0]].status == "ok" and rows[good[0]].split == "train"
    assert rows[dup].status == "duplicate" and rows[dup].path == rows[good[0]].path and good[0] in rows[dup].reason
    assert rows[html].reason == "HTML page, not an image"
    assert rows[server.url + "/gone.jpg"].reason.startswith("placeholder")
    assert "scheme" in rows["ftp://x/y.jpg"].reason
    assert rows[trunc].reason.startswith("truncated")
    assert rows[tiny].reason.startswith("too small")
    assert rows[bomb].reason.startswith("too many pixels")
    assert rows[server.url + "/404.jpg"].status == "failed" and str(rows[server.url + "/404.jpg"].http_status) == "404"
    assert rows[good[1]].split == "train" and rows[good[2]].split == "val"
    assert good[3] not in rows and custom not in rows  # quota met: later candidates never tried
    assert (manifest["reason"] == "").tolist() == (manifest["status"] == "ok").tolist()
    assert result.counts["ok"] == 3 and not result.warnings
    files = sorted(p.name for p in (tmp_path / "n00000001").iterdir())
    assert files == sorted(f"{hashlib.sha256(jpeg(i)).hexdigest()}.jpg" for i in range(3))
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["ok"] == 3


def big_header_png() -> bytes:
    """A valid-looking PNG header claiming 100,000 x 100,000 pixels, with no pixel data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_flickr_placeholder_md5_is_built_in(server, tmp_path, monkeypatch):
    body = placeholder_png()
    monkeypatch.setattr("pipeline.fetch.checks.FLICKR_PLACEHOLDER_MD5", hashlib.md5(body).hexdigest())
    url = server.file("/p.png", body, "image/png")
    collect({"n00000001": [url]}, {"n00000001": Quota(1)}, tmp_path, FAST, "imagenet")
    row = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False).iloc[0]
    assert row.status == "skipped" and row.reason == "placeholder image"
    assert FLICKR_PLACEHOLDER_MD5 == "880a7a58e05d3e83797f27573bb6d35c"


def test_shortfall_is_a_warning_and_order_independent(server, tmp_path):
    urls = [server.file(f"/s{i}.jpg", jpeg(100 + i)) for i in range(3)] + [server.url + "/404.jpg"]
    a = collect({"n00000002": urls}, {"n00000002": Quota(4, 1)}, tmp_path / "a", FAST, "imagenet")
    assert a.warnings and "3 of 5" in a.warnings[0]
    b = collect(
        {"n00000002": urls},
        {"n00000002": Quota(4, 1)},
        tmp_path / "b",
        FAST.model_copy(update={"concurrency": 1}),
        "imagenet",
    )
    assert (tmp_path / "a/manifest.csv").read_text().replace("/a/", "/").count("\n") == (
        tmp_path / "b/manifest.csv"
    ).read_text().count("\n")
    strip = lambda p: pd.read_csv(p, keep_default_na=False).drop(columns=["elapsed_ms"])
    pd.testing.assert_frame_equal(strip(tmp_path / "a/manifest.csv"), strip(tmp_path / "b/manifest.csv"))
    assert b.counts == a.counts


def test_url_lists_from_html_and_files(tmp_path):
    html = "<html><body>http://a/1.jpg<br>\nhttp://a/2.jpg<br>\n\n</body></html>"
    assert parse_url_lines(html) == ["http://a/1.jpg", "http://a/2.jpg"]
    assert parse_url_lines("http://a/1.jpg\r\nhttp://a/2.jpg\r\n") == ["http://a/1.jpg", "http://a/2.jpg"]
    lines = "n00000001_1\thttp://a/1.jpg\nn00000002_1\thttp://b/1.jpg\nn00000001_2\thttp://a/2.jpg\ngarbage line\n"
    (tmp_path / "urls.txt").write_text(lines)
    with gzip.open(tmp_path / "urls.txt.gz", "wt") as fh:
        fh.write(lines)
    for name in ("urls.txt", "urls.txt.gz"):
        assert list(iter_url_file(tmp_path / name, ["n00000001"])) == [
            ("n00000001", "http://a/1.jpg"),
            ("n00000001", "http://a/2.jpg"),
        ]


def test_cli_imagenet_from_api(server, tmp_path):
    urls = {
        w: [server.file(f"/{w}/{i}.jpg", jpeg(10 * k + i)) for i in range(6)]
        for k, w in enumerate(("n00000001", "n00000002"))
    }

    def api(h):
        wnid = h.path.split("wnid=")[1]
        h.reply(200, ("\r\n".join(urls[wnid]) + "\r\n").encode(), "text/plain") if wnid in urls else h.reply(
            200, b"", "text/plain"
        )

    server.routes["/api"] = api
    run_cli(
        "fetch",
        "--source",
        "imagenet",
        "--api-url",
        server.url + "/api",
        "--wnids",
        "n00000001,n00000002",
        "--per-class",
        "3",
        "--val-per-class",
        "2",
        "--out",
        "ds",
        cwd=tmp_path,
    )
    manifest = pd.read_csv(tmp_path / "ds/manifest.csv", keep_default_na=False)
    assert len(manifest) == 10 and set(manifest.status) == {"ok"}
    assert manifest.groupby("class").split.value_counts().to_dict() == {
        ("n00000001", "train"): 3,
        ("n00000001", "val"): 2,
        ("n00000002", "train"): 3,
        ("n00000002", "val"): 2,
    }
    run_cli("prepare", "--in", "ds", "--out", "arrays", "--size", "16x24", cwd=tmp_path)
    assert json.loads((tmp_path / "arrays/meta.json").read_text())["splits"] == {"train": 6, "val": 4}

    down = run_cli(
        "fetch", "--source", "imagenet", "--api-url", "http://127.0.0.1:9/api", "--out", "x", cwd=tmp_path, check=False
    )
    assert down.returncode == 1 and "URL-list API unreachable" in down.stderr and "Traceback" not in down.stderr
    short = run_cli(
        "fetch",
        "--source",
        "imagenet",
        "--api-url",
        server.url + "/api",
        "--wnids",
        "n00000003",
        "--out",
        "y",
        "--strict",
        cwd=tmp_path,
        check=False,
    )
    assert short.returncode == 1 and "0 of 150" in short.stderr


def test_resume_after_kill(server, tmp_path):
    """kill -9 once two of six shards are finished (folder layout); the rerun requests none of
    their URLs again and ends with every URL in the manifest, nothing partial left."""
    n = 30
    for i in range(n):
        server.file(f"/k{i}.jpg", jpeg(200 + i))
    (tmp_path / "urls.txt").write_text("".join(f"n00000001_{i}\t{server.url}/k{i}.jpg\n" for i in range(n)))
    args = ["-S", "fetch.download.concurrency=2", "fetch", "--source", "imagenet", "--url-list", "urls.txt",
            "--wnids", "n00000001", "--per-class", str(n), "--val-per-class", "0", "--layout", "folder",
            "--shard-size", "5", "--out", "ds"]  # fmt: skip
    assert kill_at(args, tmp_path, "fetch.shard", 2), "the fetch finished before its kill: the test tested nothing"
    assert not (tmp_path / "ds/manifest.csv").exists() and (tmp_path / "ds/.incomplete").exists()
    done = sorted((tmp_path / "ds/.shards").glob("*.stats.json"))
    assert 2 <= len(done) < n // 5
    finished = set(
        pd.concat([pd.read_parquet(p.with_name(p.name.replace(".stats.json", ".parquet"))) for p in done]).url
    )
    before = dict(server.hits)

    run_cli(*args, cwd=tmp_path)
    manifest = pd.read_csv(tmp_path / "ds/manifest.csv", keep_default_na=False)
    assert len(manifest) == n and set(manifest.status) == {"ok"} and manifest.url.is_unique
    again = {path for path, hits in server.hits.items() if hits > before.get(path, 0)}
    assert not again & {url.removeprefix(server.url) for url in finished}  # finished URLs were not fetched again
    assert len(list((tmp_path / "ds/n00000001").iterdir())) == n  # no partial or temporary files left
    assert not (tmp_path / "ds/.incomplete").exists() and not list((tmp_path / "ds").rglob("*.tmp"))
