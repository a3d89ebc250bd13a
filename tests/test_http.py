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


# --- destinations: a guarded client connects to public addresses only ---------------------------------


@pytest.mark.parametrize(
    "ip, kind",
    [
        ("169.254.169.254", "link-local"),  # a cloud's metadata service
        ("10.0.0.8", "private"),
        ("192.168.1.1", "private"),
        ("192.0.2.10", "private"),  # documentation (Python counts it private)
        ("100.64.0.1", "non-global"),  # shared address space
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),  # reserved
        ("0.0.0.0", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("::ffff:10.0.0.8", "private"),  # an IPv4 address mapped into IPv6
    ],
)
def test_internal_addresses_are_refused_before_any_socket_connects(monkeypatch, ip, kind):
    """The resolver's answer is checked before urllib3 opens a socket: with an injected answer, no
    connection is attempted at all (none may leave this machine's loopback in a test)."""
    import urllib3.util.connection

    from pipeline.fetch import http

    def no_socket(*args, **kwargs):
        raise AssertionError(f"a socket was opened to {args[0]}")

    monkeypatch.setattr(http, "resolve", lambda host, port: [ip])
    monkeypatch.setattr(urllib3.util.connection, "create_connection", no_socket)
    got = Client(FAST.model_copy(update={"allow_networks": []}), guarded=True).get("http://images.example/a.jpg")
    assert got.data is None and got.error.startswith(f"refused: images.example resolves to {ip} ({kind})")
    assert http.address_kind("8.8.8.8") == "" and http.address_kind(ip) == kind


def test_the_first_permitted_address_is_the_one_connected_to(server, monkeypatch):
    """A name that resolves to a refused address and to a permitted one: the permitted one, checked,
    is where the socket goes (no second lookup that could answer otherwise)."""
    from pipeline.fetch import http

    url = server.file("/a.jpg", jpeg(1)).replace("127.0.0.1", "images.example")
    monkeypatch.setattr(http, "resolve", lambda host, port: ["10.0.0.8", "127.0.0.1"])
    got = Client(FAST, guarded=True).get(url)  # FAST lets 127.0.0.1/32 through, nothing else
    assert got.error == "" and got.data == jpeg(1)


def test_an_unguarded_client_reaches_what_the_user_configured(server):
    """An archive or mirror the user names is trusted: loopback too, without allow_networks."""
    got = Client(FAST.model_copy(update={"allow_networks": []})).get(server.file("/mirror.jpg", jpeg(2)))
    assert got.error == "" and got.data == jpeg(2)
    refused = Client(FAST.model_copy(update={"allow_networks": []}), guarded=True).get(server.url + "/mirror.jpg")
    assert refused.error.startswith("refused: 127.0.0.1 resolves to 127.0.0.1 (loopback)")
    assert server.hits["/mirror.jpg"] == 1  # the refused request never reached the server
