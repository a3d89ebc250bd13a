"""A local image server for fetch benchmarks: 20 ms latency, distinct ~43 KB JPEGs, per-URL hit counts.

`http://127.0.0.1:PORT/<id>.jpg` answers, after LATENCY, a JPEG that is one of a few dozen base
pictures (synthetic cats-vs-dogs sizes, 40-46 KB, so 43 KB on average) with a COM segment holding
the id inserted after its JFIF header: every id is a distinct file by sha256 and decodes like its
base, and no image has to be kept per id, so a 14.2M-line list costs the server nothing.

It runs in `processes` forked processes sharing one port (SO_REUSEPORT, so the kernel spreads the
connections), each an asyncio loop: a Python thread per connection would cap the rate below what is
being measured. HTTP/1.1 keep-alive, and `Connection: close` honoured (urllib, hence img2dataset,
opens a connection per request). The hit counters and the time of the first request live in shared
memory, one row per server process, so counting needs no lock and the harness reads and resets them
directly. The server shares this machine's two cores with the client it serves: the same for every
contender, which is fair, but it means no client here can reach the concurrency bound exactly.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.sharedctypes import RawArray

import numpy as np

LATENCY = 0.02
HOST = "127.0.0.1"


def base_images(count: int = 32, low: int = 40_000, high: int = 46_000) -> list[bytes]:
    """`count` distinct synthetic JPEGs between `low` and `high` bytes (about 43 KB on average)."""
    from pipeline.fetch.sources.synthetic import make_image

    bases: list[bytes] = []
    index = 0
    while len(bases) < count:
        data = make_image(index % 2, index, 7)
        if low <= len(data) <= high:
            bases.append(data)
        index += 1
    return bases


def split_base(data: bytes) -> tuple[bytes, bytes]:
    """(head, tail) of a JPEG where a COM segment may go: after SOI and a JFIF APP0 when present."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    cut = 2
    if data[2:4] == b"\xff\xe0":  # keep JFIF first, where readers look for it
        cut = 4 + int.from_bytes(data[4:6], "big")
    return data[:cut], data[cut:]


def image(bases: list[tuple[bytes, bytes]], ident: int) -> list[bytes]:
    """The body for `ident`, as pieces to write: base head, COM segment with the id, base tail."""
    head, tail = bases[ident % len(bases)]
    text = b"bench image %d" % ident
    return [head, b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text, tail]


class ImageServer:
    """Start with `with ImageServer(max_ids) as server:`; `server.url(i)`, `server.hits()`..."""

    def __init__(self, max_ids: int, processes: int = 2, latency: float = LATENCY) -> None:
        self.max_ids, self.processes, self.latency = max_ids, processes, latency
        self._hits = RawArray(ctypes.c_uint32, processes * max_ids)
        self._first = RawArray(ctypes.c_double, processes)  # time.time() of the first request since reset
        self._last = RawArray(ctypes.c_double, processes)  # time.time() of the last response since reset
        self._total = RawArray(ctypes.c_uint64, processes)  # requests, counted ids or not
        self.port = 0
        self._procs: list[multiprocessing.Process] = []

    # --- the harness side -------------------------------------------------------------------

    def __enter__(self) -> ImageServer:
        bases = [split_base(b) for b in base_images()]
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((HOST, 0))  # picks the port; bound but never listening, so it takes no connections
        self.port = probe.getsockname()[1]
        ctx = multiprocessing.get_context("fork")  # the shared arrays and the bases pass by inheritance
        ready = ctx.Semaphore(0)
        self._procs = [
            ctx.Process(target=self._serve, args=(row, bases, ready), daemon=True) for row in range(self.processes)
        ]
        for proc in self._procs:
            proc.start()
        for _ in self._procs:
            if not ready.acquire(timeout=30):
                raise RuntimeError("image server did not start")
        probe.close()
        return self

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.join(5)

    def url(self, ident: int) -> str:
        return f"http://{HOST}:{self.port}/{ident}.jpg"

    def hits(self) -> np.ndarray:
        """Requests per id (summed over the server processes), a copy."""
        return np.frombuffer(self._hits, np.uint32).reshape(self.processes, self.max_ids).sum(axis=0, dtype=np.int64)

    def total(self) -> int:
        return int(sum(self._total))

    def first_request(self) -> float | None:
        """time.time() of the first request since the last reset, or None."""
        times = [t for t in self._first if t > 0]
        return min(times) if times else None

    def window(self) -> float:
        """Seconds from the first request to the last response since the last reset: the time a
        client spent fetching, without its start-up and shutdown."""
        first = self.first_request()
        return max(self._last) - first if first else 0.0

    def reset(self) -> None:
        np.frombuffer(self._hits, np.uint32)[:] = 0
        for row in range(self.processes):
            self._first[row] = self._last[row] = 0.0
            self._total[row] = 0

    # --- the server side (in each forked process) -------------------------------------------

    def _serve(self, row: int, bases: list[tuple[bytes, bytes]], ready) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness's Ctrl-C is the harness's
        hits = np.frombuffer(self._hits, np.uint32).reshape(self.processes, self.max_ids)[row]
        first, last, total, latency, max_ids = self._first, self._last, self._total, self.latency, self.max_ids
        missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        loop: asyncio.AbstractEventLoop | None = None

        class Http(asyncio.Protocol):
            """HTTP/1.1 as a bare protocol: no task or stream objects per connection (cheaper per
            connection than asyncio streams, which matters for clients that connect per request)."""

            def connection_made(self, transport) -> None:
                self.transport, self.buffer, self.closing = transport, b"", False

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                    request, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                    if first[row] == 0.0:
                        first[row] = time.time()
                    total[row] += 1
                    parts = request.split(b" ", 2)
                    path = parts[1] if len(parts) > 2 else b""
                    close = b"connection: close" in request.lower()
                    ident = (
                        int(path[1:-4])
                        if path.startswith(b"/") and path.endswith(b".jpg") and path[1:-4].isdigit()
                        else -1
                    )
                    loop.call_later(latency, self.respond, ident, close)

            def respond(self, ident: int, close: bool) -> None:
                if self.transport.is_closing():
                    return
                if ident < 0:
                    self.transport.write(missing)
                else:
                    if ident < max_ids:
                        hits[ident] += 1
                    pieces = image(bases, ident)
                    conn = b"Connection: close\r\n" if close else b""
                    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n%bContent-Length: %d\r\n\r\n" % (
                        conn,
                        sum(map(len, pieces)),
                    )
                    self.transport.writelines([head, *pieces])
                last[row] = time.time()
                if close:
                    self.transport.close()

        async def main() -> None:
            nonlocal loop
            loop = asyncio.get_running_loop()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((HOST, self.port))
            sock.listen(1024)
            server = await loop.create_server(Http, sock=sock, backlog=1024)
            ready.release()
            await server.serve_forever()

        asyncio.run(main())


# --- a trivial client, to measure the server's own ceiling ----------------------------------


def _client(port: int, ids: int, concurrency: int, seconds: float, keepalive: bool, result) -> None:
    async def worker(k: int, stop: float) -> int:
        done, reader, writer = 0, None, None
        ident = k
        while time.monotonic() < stop:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            conn = b"" if keepalive else b"Connection: close\r\n"
            writer.write(b"GET /%d.jpg HTTP/1.1\r\nHost: x\r\n%b\r\n" % (ident % ids, conn))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            done += 1
            ident += concurrency
            if not keepalive:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()
        return done

    async def main() -> int:
        stop = time.monotonic() + seconds
        return sum(await asyncio.gather(*(worker(k, stop) for k in range(concurrency))))

    result.value = asyncio.run(main())


def ceiling(
    server: ImageServer, concurrency: int = 256, seconds: float = 3.0, keepalive: bool = True, clients: int = 1
) -> float:
    """Requests/s that `clients` trivial asyncio client processes (raw sockets, no parsing beyond
    Content-Length) get from the server at `concurrency` connections in all."""
    ctx = multiprocessing.get_context("fork")
    results = [ctx.Value(ctypes.c_long, 0) for _ in range(clients)]
    procs = [
        ctx.Process(target=_client, args=(server.port, server.max_ids, concurrency // clients, seconds, keepalive, r))
        for r in results
    ]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - start
    return sum(r.value for r in results) / max(elapsed, seconds)


if __name__ == "__main__":  # python -m benchmarks.imageserver: the server's ceiling on this machine
    with ImageServer(100_000) as srv:
        for keep, conc, n_clients in ((True, 64, 1), (True, 256, 1), (True, 256, 2), (False, 64, 1), (False, 256, 2)):
            rate = ceiling(srv, conc, 3.0, keep, n_clients)
            print(
                f"concurrency {conc}, {'keep-alive' if keep else 'a connection per request'}, "
                f"{n_clients} client process(es): {rate:.0f} req/s (bound {conc / LATENCY:.0f})"
            )
        print(f"{srv.total()} requests served; os.cpu_count() = {os.cpu_count()}")
