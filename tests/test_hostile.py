"""Hostile shards, clusters and destinations (issue 18), each numbered case through the command line:
a fetch never hangs on a host or a cluster, never trusts a damaged shard, never reaches into the
machine's own network; every failure is one line naming what to do. Every server, listener and
cluster here is on a loopback address."""

from __future__ import annotations

import errno
import gzip
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.dataset import read_manifest
from pipeline.fetch.sources.imagenet import iter_url_file
from tests.conftest import ROOT, kill_at, pause_at, release, run_cli
from tests.scripted import ALLOW_LOOPBACK, Listener, drip, jpeg

A, B = "n00000001", "n00000002"


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def url_list(tmp_path: Path, urls: list[str], name: str = "urls.txt", cls: str = A) -> Path:
    path = tmp_path / name
    with open(path, "a") as fh:
        fh.write("".join(f"{cls}_{i}\t{url}\n" for i, url in enumerate(urls)))
    return path


def fetch_args(n: int, layout: str, *extra: str, out: str = "ds", urls: str = "urls.txt", wnids: str = A, val: int = 0):
    """`pipeline fetch` of `n` train and `val` validation images a class from the list `urls`
    (loopback let through)."""
    return [*ALLOW_LOOPBACK, *extra, "fetch", "--source", "imagenet", "--url-list", urls, "--wnids", wnids,
            "--per-class", str(n), "--val-per-class", str(val), "--layout", layout, "--out", out]  # fmt: skip


def images(server, n: int, prefix: str = "g", seed: int = 500) -> list[str]:
    return [server.file(f"/{prefix}{i}.jpg", jpeg(seed + i)) for i in range(n)]


# --- 1. a drip-feeding server ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder", "shards"])
def test_01_a_drip_feeding_server_is_cut_at_total_timeout_in_both_layouts(server, tmp_path, layout):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    server.routes["/drip.jpg"] = lambda h: (h.wfile.write(head), h.wfile.flush(), drip(h, b"", b"\xff" * 100_000))
    url_list(tmp_path, [server.url + "/drip.jpg", *images(server, 3)])  # (first: tried in the first wave)
    start = time.monotonic()
    run_cli(*fetch_args(3, layout, "-S", "fetch.download.total_timeout=2"), cwd=tmp_path)
    assert time.monotonic() - start < 15  # one byte every 0.2 s would go on for 100,000 s
    manifest = read_manifest(tmp_path / "ds")
    row = manifest[manifest.url == server.url + "/drip.jpg"].iloc[0]
    assert row.status == "failed_to_download" and row.error_message == "timeout: over 2 s"
    assert (manifest.status == "success").sum() == 3


# --- 2, 3. clusters: no worker, a worker lost, an address that is no scheduler --------------------------


@pytest.fixture
def scheduler():
    """A Dask scheduler on 127.0.0.1 with no worker of its own."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def start_worker(address: str) -> subprocess.Popen:
    """A `dask worker` process (no nanny: a kill is final), returned once the scheduler has it."""
    from distributed import Client

    proc = subprocess.Popen(
        ["dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with Client(address, timeout=30) as client:
        before = len(client.scheduler_info()["workers"])
        client.wait_for_workers(before + 1, timeout=60)
    return proc


@pytest.mark.slow
def test_02_a_cluster_without_worker_is_one_line_after_the_deadline_and_a_rerun_resumes(server, tmp_path, scheduler):
    url_list(tmp_path, images(server, 4))
    args = fetch_args(4, "shards", "-S", "fetch.wait_for_workers=2", "-S", "fetch.shard_size=2")
    start = time.monotonic()
    proc = run_cli(*args, "--engine", "dask", "--scheduler", scheduler, cwd=tmp_path, check=False)
    assert 2 <= time.monotonic() - start < 30
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and f"no Dask worker at {scheduler} for 2 s (fetch.wait_for_workers)" in line
    assert (tmp_path / "ds/.incomplete").exists()  # a failed run is never read as a dataset...
    worker = start_worker(scheduler)
    try:  # ...and a rerun with a worker resumes from it
        run_cli(*args, "--engine", "dask", "--scheduler", scheduler, cwd=tmp_path)
    finally:
        worker.kill()
        worker.wait()
    assert (read_manifest(tmp_path / "ds").status == "success").sum() == 4


def _held(server, n: int, release: threading.Event, prefix: str) -> list[str]:
    """`n` image URLs whose answers wait until `release` is set (at most a minute)."""

    def held(h, body):
        release.wait(60)
        try:
            h.reply(200, body, "image/jpeg")
        except OSError:  # the client is gone (its worker was killed)
            pass

    urls = []
    for i in range(n):
        body = jpeg(700 + i)
        server.routes[f"/{prefix}{i}.jpg"] = lambda h, body=body: held(h, body)
        urls.append(f"{server.url}/{prefix}{i}.jpg")
    return urls


@pytest.mark.slow
def test_02_the_only_worker_killed_mid_run_is_one_line_after_the_deadline_then_a_new_worker_resumes(
    server, tmp_path, scheduler
):
    """The worker dies holding shard 0's result (finished, written, not yet gathered) and running
    shard 1: both must run again, there is no worker to run them, and the run says so in time."""
    answer = threading.Event()
    url_list(tmp_path, [*images(server, 2), *_held(server, 4, answer, "h")])
    args = fetch_args(6, "shards", "-S", "fetch.wait_for_workers=3", "-S", "fetch.shard_size=2")
    args += ["--engine", "dask", "--scheduler", scheduler]
    worker = start_worker(scheduler)
    proc = pause_at(args, tmp_path, "dask.done", 1, stderr=subprocess.PIPE, text=True)
    assert proc.returncode is None, "the fetch ended before its first shard's result came back"
    assert (tmp_path / "ds/shards/00000_stats.json").exists()
    worker.kill()
    worker.wait()
    answer.set()
    release(proc)  # the client goes on: to gather shard 0 from a dead worker
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "no Dask worker at" in one_error_line(stderr)
    hits = dict(server.hits)
    worker = start_worker(scheduler)
    try:
        run_cli(*args, cwd=tmp_path)
    finally:
        worker.kill()
        worker.wait()
    assert (read_manifest(tmp_path / "ds").status == "success").sum() == 6
    assert all(server.hits[f"/g{i}.jpg"] == hits[f"/g{i}.jpg"] for i in range(2))  # shard 0 was not fetched again


@pytest.mark.slow
def test_02_a_task_whose_worker_dies_runs_again_on_another(server, tmp_path, scheduler):
    release = threading.Event()
    url_list(tmp_path, _held(server, 4, release, "h"))
    args = fetch_args(4, "shards", "-S", "fetch.wait_for_workers=30", "-S", "fetch.shard_size=2")
    args += ["--engine", "dask", "--scheduler", scheduler]
    workers = [start_worker(scheduler), start_worker(scheduler)]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    deadline = time.monotonic() + 120
    while sum(server.hits.values()) < 2:  # both workers hold a shard's first request
        assert time.monotonic() < deadline and proc.poll() is None, "the shards never started"
        time.sleep(0.05)
    workers[0].kill()
    workers[0].wait()
    release.set()
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        workers[1].kill()
        workers[1].wait()
    assert proc.returncode == 0, stderr
    assert (read_manifest(tmp_path / "ds").status == "success").sum() == 4


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["http", "silent"])
def test_03_a_scheduler_address_that_is_no_scheduler_is_one_line(server, tmp_path, peer):
    url_list(tmp_path, images(server, 2))
    listener = Listener() if peer == "silent" else None
    address = f"tcp://127.0.0.1:{listener.port}" if listener else f"tcp://{server.url.split('//')[1]}"
    try:
        start = time.monotonic()
        args = [*fetch_args(2, "shards", "-S", "fetch.connect_timeout=2"), "--engine", "dask", "--scheduler", address]
        proc = run_cli(*args, cwd=tmp_path, check=False)
        assert time.monotonic() - start < 30
    finally:
        if listener:
            listener.close()
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and f"cannot reach the Dask scheduler '{address}'" in line
    assert "no Dask handshake" in line or "protocol" in line


# --- 4-7. damaged shards are never trusted ------------------------------------------------------------


FETCHED = ("-S", "fetch.shard_size=2", "-S", "fetch.workers=1")


@pytest.fixture
def fetched(server, tmp_path) -> list[str]:
    """Two classes of four images (three train, one val) fetched into four shards of two: shards 0
    and 1 hold class A's, 2 and 3 class B's."""
    urls = [*images(server, 4, "a", 500), *images(server, 4, "b", 600)]
    url_list(tmp_path, urls[:4], cls=A)
    url_list(tmp_path, urls[4:], cls=B)
    run_cli(*fetch_args(3, "shards", *FETCHED, wnids=f"{A},{B}", val=1), cwd=tmp_path)
    return urls


def refetched(server, before: dict, urls: list[str]) -> list[int]:
    """Which of `urls` (by position) were requested again since `before`."""
    paths = [url.removeprefix(server.url) for url in urls]
    return [i for i, path in enumerate(paths) if server.hits.get(path, 0) > before.get(path, 0)]


def prepare(tmp_path: Path) -> pd.DataFrame:
    """prepare the fetched dataset; its skipped.csv."""
    run_cli("prepare", "--in", "ds", "--out", "prepared", "--size", "8x8", cwd=tmp_path)
    return pd.read_csv(tmp_path / "prepared/skipped.csv", keep_default_na=False)


def test_04_a_flipped_byte_in_a_finished_shard_is_skipped_by_prepare_and_refetched_by_verify(server, tmp_path, fetched):
    tar = tmp_path / "ds/shards/00000.tar"
    with tarfile.open(tar) as archive:
        member = next(info for info in archive.getmembers() if info.name.endswith(".jpg"))
    data = bytearray(tar.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01  # inside the JPEG's scan data: it still decodes
    tar.write_bytes(bytes(data))
    skipped = prepare(tmp_path)
    assert skipped.path.tolist() == [f"shards/00000.tar#{member.name}"] and skipped.reason[0].startswith("damaged")
    assert json.loads((tmp_path / "prepared/meta.json").read_text())["splits"] == {"train": 5, "val": 2}

    before = dict(server.hits)
    args = fetch_args(3, "shards", *FETCHED, wnids=f"{A},{B}", val=1)
    run_cli(*args, cwd=tmp_path)  # a plain rerun: the tar's size and members are right
    assert refetched(server, before, fetched) == []
    run_cli(*args, "--verify", cwd=tmp_path)  # re-hashed: shard 0 is fetched again, and only it
    assert refetched(server, before, fetched) == [0, 1]
    assert prepare(tmp_path).empty


@pytest.mark.parametrize("damage", ["truncated tar", "deleted tar", "truncated rows"])
def test_05_07_a_cut_or_missing_shard_file_is_an_unfinished_shard_that_a_rerun_fetches(
    server, tmp_path, fetched, damage
):
    path = tmp_path / "ds/shards" / ("00001.parquet" if damage == "truncated rows" else "00001.tar")
    if damage == "deleted tar":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = dict(server.hits)
    proc = run_cli(*fetch_args(3, "shards", *FETCHED, wnids=f"{A},{B}", val=1), cwd=tmp_path)
    assert "Traceback" not in proc.stderr and not (tmp_path / "ds/.incomplete").exists()
    assert refetched(server, before, fetched) == [2, 3]  # shard 1 only
    assert prepare(tmp_path).empty
    assert json.loads((tmp_path / "prepared/meta.json").read_text())["splits"] == {"train": 6, "val": 2}


# --- 8, 9. URL lists: cut short, absurd lines ------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder", "shards"])
def test_08_a_truncated_gzip_list_is_one_line_naming_it(server, tmp_path, layout):
    whole = gzip.compress("".join(f"{A}_{i}\t{url}\n" for i, url in enumerate(images(server, 3) * 200)).encode())
    (tmp_path / "urls.txt.gz").write_bytes(whole[: len(whole) // 2])
    proc = run_cli(*fetch_args(3, layout, urls="urls.txt.gz"), cwd=tmp_path, check=False)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and "urls.txt.gz is cut short or corrupt" in line and "download it again" in line


def test_09_an_absurd_line_is_skipped_and_counted_unread(server, tmp_path):
    good = images(server, 3)
    huge = f"{A}_x\thttp://127.0.0.1:9/{'a' * 2_000_000}.jpg\n"
    (tmp_path / "urls.txt").write_text(f"{A}_0\t{good[0]}\n{huge}{A}_1\t{good[1]}\n{A}_2\t{good[2]}\n")
    proc = run_cli(*fetch_args(3, "folder"), cwd=tmp_path)
    assert "1 line over 8,192 bytes skipped (fetch.imagenet.max_line_bytes)" in proc.stderr
    manifest = read_manifest(tmp_path / "ds")
    assert len(manifest) == 3 and (manifest.status == "success").all()
    warnings = json.loads((tmp_path / "ds/summary.json").read_text())["warnings"]
    assert any("line over 8,192 bytes skipped" in w for w in warnings)
    tracemalloc.start()  # streamed: the long line is never held whole
    rows = list(iter_url_file(tmp_path / "urls.txt", [A]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(rows) == 3 and peak < 500_000
    (tmp_path / "junk.txt").write_text(huge * 3)
    proc = run_cli(*fetch_args(3, "folder", urls="junk.txt", out="junk"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "every line (3) is over 8,192 bytes" in one_error_line(proc.stderr)


# --- 10, 11. a full disk: every message names its file, sizes in units -----------------------------------


class _FullDisk:
    """A file whose writes fail as on a full disk (ENOSPC, no file name); the rest as `handle`'s."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def _full_disk_at(monkeypatch, which: str) -> None:
    """Make the writes of a shard writer's file `which` (spill, tar, parquet) fail as a full disk does."""
    if which == "spill":
        import pipeline.fetch.writers as writers

        monkeypatch.setattr(writers, "open", lambda *args: _FullDisk(open(*args)), raising=False)
    elif which == "tar":
        full = OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(tarfile.TarFile, "addfile", lambda *a, **k: (_ for _ in ()).throw(full))
    else:
        import pipeline.core.files as files

        real = os.fdopen

        def fdopen(fd, *args, **kwargs):
            handle = real(fd, *args, **kwargs)
            return _FullDisk(handle) if ".parquet." in os.readlink(f"/proc/self/fd/{fd}") else handle

        monkeypatch.setattr(files.os, "fdopen", fdopen)


@pytest.mark.parametrize(
    "which, named", [("spill", ".00000.spill.tmp"), ("tar", ".00000.tar.tmp"), ("parquet", "00000.parquet")]
)  # noqa: E501
def test_10_a_full_disk_in_the_shard_writers_names_the_file_and_leaves_nothing_trusted(
    server, tmp_path, monkeypatch, which, named
):  # noqa: E501
    urls = images(server, 4)
    url_list(tmp_path, urls)
    args = fetch_args(4, "shards")
    with monkeypatch.context() as patched:
        _full_disk_at(patched, which)
        proc = run_cli(*args, cwd=tmp_path, check=False)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and "no space left on device writing" in line and named in line, line
    root = tmp_path / "ds"
    assert not list(root.rglob("*_stats.json")) and (root / ".incomplete").exists()
    run_cli(*args, cwd=tmp_path)  # room again: the rerun completes, as an uninterrupted run would
    run_cli(*args[:-1], "whole", cwd=tmp_path)
    assert (root / "shards/00000.tar").read_bytes() == (tmp_path / "whole/shards/00000.tar").read_bytes()
    assert not list(root.rglob("*.tmp"))


def test_11_a_prepare_that_cannot_fit_says_its_sizes_in_units(tmp_path, monkeypatch):
    import shutil as shutil_module

    from tests.test_faults import make_folder

    make_folder(tmp_path / "raw", {"a": 6, "b": 6})
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr("pipeline.prepare.prepare.shutil.disk_usage", lambda path: usage._replace(free=1000))
    proc = run_cli("prepare", "--in", "raw", "--out", "out", "--size", "60x80", cwd=tmp_path, check=False)
    line = one_error_line(proc.stderr)
    assert "the prepared arrays need 172.8 KB but" in line and "has 1.0 KB free" in line and "0.0 GB" not in line


@pytest.mark.slow
@pytest.mark.parametrize("point, n", [("fetch.tar", 3), ("fetch.rows", 2)])
def test_10_kill_inside_the_tar_and_parquet_writes_then_rerun_gives_the_uninterrupted_result(
    server, tmp_path, point, n
):  # noqa: E501
    url_list(tmp_path, images(server, 6))
    args = fetch_args(6, "shards", "-S", "fetch.shard_size=3", "-S", "fetch.workers=1")
    assert kill_at(args, tmp_path, point, n), f"the fetch finished before {point} {n}"
    run_cli(*args, cwd=tmp_path)
    run_cli(*args[:-1], "whole", cwd=tmp_path)
    for name in ("shards/00000.tar", "shards/00001.tar"):
        assert (tmp_path / "ds" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    strip = lambda root: read_manifest(root).drop(columns="elapsed_ms")  # noqa: E731
    pd.testing.assert_frame_equal(strip(tmp_path / "ds"), strip(tmp_path / "whole"))
    assert not list((tmp_path / "ds").rglob("*.tmp"))


# --- 12. no fetch from the machine's own network -----------------------------------------------------


@pytest.mark.parametrize("target", ["127.0.0.2", "[::1]"])
def test_12_a_redirect_to_an_internal_address_is_refused_and_never_connected(server, tmp_path, target):
    listener = Listener(target.strip("[]"))
    try:
        inside = f"http://{target}:{listener.port}/latest/meta-data"
        server.routes["/moved.jpg"] = lambda h: h.reply(302, headers=[("Location", inside)])
        url_list(tmp_path, [server.url + "/moved.jpg", inside, *images(server, 2)])  # (tried in the first wave)
        run_cli(*fetch_args(2, "folder"), cwd=tmp_path)  # 127.0.0.1/32 let through, nothing else
        manifest = read_manifest(tmp_path / "ds").set_index("url")
        for url in (server.url + "/moved.jpg", inside):
            assert manifest.loc[url, "status"] == "skipped"
            assert manifest.loc[url, "error_message"].startswith(f"refused: {target.strip('[]')} resolves to")
            assert "loopback" in manifest.loc[url, "error_message"]
        assert listener.accepted == []  # not one connection: the address is refused before any socket
    finally:
        listener.close()


def test_12_without_allow_networks_even_the_tests_own_server_is_refused(server, tmp_path):
    url_list(tmp_path, images(server, 2))
    args = [a for a in fetch_args(2, "folder") if a not in ALLOW_LOOPBACK]
    proc = run_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "no usable image fetched" in one_error_line(proc.stderr)
    assert sum(server.hits.values()) == 0
    assert set(read_manifest(tmp_path / "ds").error_message.str.split(":").str[0]) == {"refused"}
