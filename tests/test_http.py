"""The one HTTP client (pipeline.fetch.http) against a scripted server on 127.0.0.1: every limit,
tested once here for every request the product makes."""

import time

import pytest

from pipeline.fetch.http import Client
from tests.scripted import FAST, drip, jpeg


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


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_drip_feeding_server_is_cut_at_total_timeout(server, phase):
    """One byte every 0.2 s never trips the 1 s read timeout; the total deadline still holds,
    whether the bytes are the status line and headers or the body."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    server.routes["/drip.jpg"] = lambda h: (
        drip(h, head, b"\xff" * 100_000)
        if phase == "headers"
        else (h.wfile.write(head), h.wfile.flush(), drip(h, b"", b"\xff" * 100_000))
    )
    settings = FAST.model_copy(update={"total_timeout": 1.5, "read_timeout": 1.0, "retries": 2})
    start = time.monotonic()
    got = Client(settings).get(server.url + "/drip.jpg")
    elapsed = time.monotonic() - start
    assert got.data is None and got.error == "timeout: over 1.5 s", got.error
    assert 1.5 <= elapsed < 2.5  # the deadline, plus the watchdog's look every 0.1 s


def test_waits_between_retries_end_at_the_deadline(server):
    """A server asking to retry after 30 s: each wait is capped, and none outlasts the deadline."""
    server.routes["/busy.jpg"] = lambda h: h.reply(503, b"busy", headers=[("Retry-After", "30")])
    settings = FAST.model_copy(update={"total_timeout": 3.0, "retries": 10})
    start = time.monotonic()
    got = Client(settings).get(server.url + "/busy.jpg")
    assert got.data is None and got.error.startswith(("timeout", "HTTP 503")) and time.monotonic() - start < 3.5
