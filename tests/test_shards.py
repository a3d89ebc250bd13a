"""The shard layout (pipeline.fetch.collect, shards, writers) against a scripted server on 127.0.0.1: every URL
accounted for, the folder layout's decisions, resume after kill -9, the Dask engine, wnids files."""

import hashlib
import inspect
import json
import tarfile
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.dataset import (
    COLUMNS,
    iter_shard_images,
    layout,
    read_manifest,
    read_parquet_frame,
    shard_names,
    stored_items,
)
from pipeline.fetch.params import FetchParams
from pipeline.fetch.plan import make_plan
from pipeline.fetch.sources import ImagenetParams
from pipeline.fetch.sources.imagenet import fetch, iter_url_file, read_wnids_file
from tests.conftest import kill_at, run_cli
from tests.scripted import ALLOW_LOOPBACK, FAST, big_header_png, jpeg, placeholder_png

A, B = "n00000001", "n00000002"
SETTINGS = FAST.model_copy(
    update={"concurrency": 4, "placeholder_sha256": [hashlib.sha256(placeholder_png()).hexdigest()]}
)


def mixed_list(server, tmp_path: Path) -> Path:
    """Two classes of good JPEGs and PNGs mixed with every kind of bad URL, duplicates within and
    across classes and a repeated URL; class A runs short of good images in its first wave."""
    lines = []
    for k, cls in enumerate((A, B)):
        urls = [server.file(f"/{cls}/g{i}.jpg", jpeg(1000 * k + i)) for i in range(14)]
        urls[3] = server.file(f"/{cls}/p.png", _png(k), "image/png")
        bad = [
            server.url + f"/{cls}/404.jpg",
            server.file(f"/{cls}/html.jpg", b"<!DOCTYPE html><html>gone</html>", "text/html"),
            server.file(f"/{cls}/trunc.jpg", jpeg(7 + k, (200, 300))[:800]),
            server.file(f"/{cls}/ph.png", placeholder_png(), "image/png"),
            server.file(f"/{cls}/bomb.png", big_header_png()),
            server.file(f"/{cls}/dup.jpg", jpeg(1000 * k)),  # same bytes as this class's g0
            "ftp://example.com/x.jpg",
        ]
        ordered = urls[:2] + bad + urls[2:] + [urls[0]]  # the last: the same URL again (counted once)
        lines += [f"{cls}_{i}\t{url}\n" for i, url in enumerate(ordered)]
    lines.insert(5, f"{B}_x\t{server.url}/{A}/g1.jpg\n")  # B lists A's image early: A owns it (class order)
    lines.append("n99999999_1\thttp://other.class/x.jpg\n")
    path = tmp_path / "urls.txt"
    path.write_text("".join(lines))
    return path


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _fetch(out: Path, urls: Path, cfg: FetchParams, per_class=8, val=3, settings=SETTINGS):
    params = ImagenetParams(wnids=[A, B], per_class=per_class, val_per_class=val, url_list=str(urls))
    out.mkdir(parents=True, exist_ok=True)
    return fetch(out, params, cfg.model_copy(update={"download": settings}))


def _decisions(frame: pd.DataFrame) -> pd.DataFrame:
    """What both layouts must agree on: each URL's class, status, reason kind, split and content."""
    frame = frame[["url", "class", "status", "error_message", "split", "sha256"]].copy()
    frame["error_message"] = frame["error_message"].str.split(":").str[0]
    return frame.astype(str).sort_values(["class", "url"]).reset_index(drop=True)


@pytest.mark.parametrize("verify", ["decode", "header"])
def test_shards_every_url_accounted_and_same_decisions_as_folder(server, tmp_path, verify):
    urls = mixed_list(server, tmp_path)
    folder = _fetch(tmp_path / "folder", urls, FetchParams(layout="folder"))
    sharded = _fetch(
        tmp_path / "sharded",
        urls,
        FetchParams(layout="shards", shard_size=6, workers=2),
        settings=SETTINGS.model_copy(update={"verify": verify}),
    )
    root = tmp_path / "sharded"
    assert layout(root) == "shards" and layout(tmp_path / "folder") == "folder"
    assert sharded.counts == folder.counts and sharded.warnings == folder.warnings and sharded.reasons == folder.reasons
    manifest = read_manifest(root)
    assert list(manifest.columns) == COLUMNS
    pd.testing.assert_frame_equal(_decisions(manifest), _decisions(read_manifest(tmp_path / "folder")))
    assert (
        set(manifest.split[manifest.status == "success"]) == {"train", "val"} and manifest.url.is_unique is False
    )  # B lists A's URL too
    assert not manifest.duplicated(["class", "url"]).any()
    assert (manifest.groupby("class").apply(lambda g: (g.status == "success").sum(), include_groups=False) == 11).all()
    dup = manifest[manifest.status == "duplicate"]
    assert len(dup) >= 3 and all(p.startswith("shards/") and "#" in p for p in dup.path)
    # Every shard: tar members = its ok rows (before dedupe), parquet rows = its URLs, stats last.
    shards = shard_names(root)
    assert shards == [f"{n:05d}" for n in range(len(shards))] and len(shards) >= 3
    usable, _ = stored_items(root)
    where = {
        (shard, member): (cls, split)
        for shard, member, cls, split in zip(usable["shard"], usable["member"], usable["class"], usable["split"])
    }
    items, splits, classes = [], Counter(), [A, B]
    for name in shards:
        rows = pd.read_parquet(root / "shards" / f"{name}.parquet")
        stats = json.loads((root / "shards" / f"{name}_stats.json").read_text())
        assert stats["rows"] == len(rows) and stats["counts"].get("success", 0) == (rows.status == "success").sum()
        with tarfile.open(root / "shards" / f"{name}.tar") as tar:  # a standard sample per fetched image
            names = tar.getnames()
            ok = rows[rows.status == "success"]
            keys = [p.split("#")[1].rsplit(".", 1)[0] for p in ok.path]
            assert names == [m for p, k in zip(ok.path, keys) for m in (p.split("#")[1], f"{k}.cls", f"{k}.json")]
            final = read_parquet_frame(root / "manifest" / f"{name}.parquet")
            for key in keys:  # the settled decisions, in the sample itself
                row = final.iloc[int(key[5:])]
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                label = int(tar.extractfile(f"{key}.cls").read())
                assert label == meta["cls"] == classes.index(row["class"]) and meta["key"] == key
                assert (meta["url"], meta["class"], meta["sha256"]) == (row.url, row["class"], row.sha256)
                assert (meta["split"], meta["status"]) == (row.split, row.status)
                if row.status == "duplicate":
                    assert meta["duplicate_of"] == row.path.split("#")[1].rsplit(".", 1)[0]
                splits[meta["split"]] += 1
        items += [
            (*where[name, member], data)
            for member, data in iter_shard_images(root, name, 10**8)
            if (name, member) in where
        ]
    final_ok = manifest[manifest.status == "success"]
    assert len(items) == len(final_ok) and all(
        hashlib.sha256(data).hexdigest() in set(final_ok.sha256) for *_, data in items
    )
    assert sorted((cls, split) for cls, split, _ in items) == sorted(zip(final_ok["class"], final_ok.split))
    assert splits == Counter(manifest.split[manifest.status.isin(["success", "duplicate"])])
    assert json.loads((root / "dataset.json").read_text())["layout"] == "shards" and not (root / ".plan").exists()


def test_plan_streams_rows_to_disk(tmp_path):
    """The readers are generators and the plan holds a few bytes per row, never the rows."""
    n = 60_000

    def rows():
        for i in range(n):
            yield (A if i % 3 else B), f"http://host.example/{i % 50_000:07d}/some/longer/path/to/an/image.jpg"
        yield "n99999999", "http://other/x.jpg"

    assert inspect.isgeneratorfunction(iter_url_file)
    tracemalloc.start()
    plan = make_plan(rows(), [A, B], tmp_path / "plan", batch=2048)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * n  # arrays of a few bytes per row; a list of the rows alone would take ~250 each
    assert plan.path.exists() and len(plan) < n  # repeated URLs of a class counted once
    assert plan.counts.sum() == len(plan) and list(plan.rank[plan.cls == 0][:3]) == [0, 1, 2]
    first = plan.urls(np.array([0, 1]))
    assert first[0].startswith("http://host.example/0000000/") and first[1].startswith("http://host.example/0000001/")
    expected = len({(A if i % 3 else B, i % 50_000) for i in range(n)})
    assert len(plan) == expected


@pytest.mark.slow
def test_kill_then_rerun_skips_finished_shards_and_equals_uninterrupted(server, tmp_path):
    n = 24
    for i in range(n):
        server.file(f"/k{i}.jpg", jpeg(300 + i))
    (tmp_path / "urls.txt").write_text("".join(f"{A}_{i}\t{server.url}/k{i}.jpg\n" for i in range(n)))
    (tmp_path / "wnids.txt").write_text(f"# one class\n{A}\n")
    args = [*ALLOW_LOOPBACK, "-S", "fetch.download.concurrency=2", "-S", "fetch.workers=1", "fetch",
            "--source", "imagenet", "--url-list", "urls.txt", "--wnids-file", "wnids.txt", "--per-class", str(n),
            "--val-per-class", "0", "--layout", "shards", "--shard-size", "4"]  # fmt: skip
    assert kill_at([*args, "--out", "ds"], tmp_path, "fetch.shard", 2), "the fetch finished before its kill"
    done = sorted(p.name for p in (tmp_path / "ds/shards").glob("*_stats.json"))
    assert 2 <= len(done) < n // 4 and (tmp_path / "ds/.incomplete").exists()
    before = dict(server.hits)
    finished_urls = set(
        pd.concat(
            [pd.read_parquet(tmp_path / "ds/shards" / name.replace("_stats.json", ".parquet")) for name in done]
        ).url
    )

    run_cli(*args, "--out", "ds", cwd=tmp_path)
    again = {path for path, hits in server.hits.items() if hits > before.get(path, 0)}
    assert not again & {
        u.split(str(server.url.split("//")[1]))[-1] for u in finished_urls
    }  # finished shards were not fetched again
    run_cli(*args, "--out", "whole", cwd=tmp_path)
    resumed, whole = read_manifest(tmp_path / "ds"), read_manifest(tmp_path / "whole")
    pd.testing.assert_frame_equal(resumed.drop(columns="elapsed_ms"), whole.drop(columns="elapsed_ms"))
    for shard in shard_names(tmp_path / "ds"):
        name = f"shards/{shard}.tar"
        assert (tmp_path / "ds" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (tmp_path / "ds/.incomplete").exists() and not list((tmp_path / "ds").rglob("*.tmp"))


@pytest.fixture
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local:
        yield local


@pytest.mark.slow
def test_fetch_prepare_train_on_a_dask_cluster_equal_the_local_pool(server, tmp_path, cluster):
    """fetch -> prepare -> train -> evaluate on the shard layout, once with every shard task on the
    Dask cluster (127.0.0.1) and once on the local process pool: the same manifest, the same
    prepared bytes, the same metrics."""
    from pipeline.prepare.params import PrepareParams
    from pipeline.prepare.prepare import prepare
    from tests.test_train_shards import _train_and_evaluate

    urls = mixed_list(server, tmp_path)
    local = _fetch(tmp_path / "local", urls, FetchParams(layout="shards", shard_size=5, workers=2))
    dask = _fetch(
        tmp_path / "dask",
        urls,
        FetchParams(layout="shards", shard_size=5, engine="dask", scheduler=cluster.scheduler_address),
    )
    assert local.counts == dask.counts

    def strip(root):
        return read_manifest(root).drop(columns="elapsed_ms")

    pd.testing.assert_frame_equal(strip(tmp_path / "local"), strip(tmp_path / "dask"))
    prepare(tmp_path / "local", tmp_path / "local-prepared", PrepareParams(size=(12, 12)))
    prepare(
        tmp_path / "dask",
        tmp_path / "dask-prepared",
        PrepareParams(size=(12, 12), engine="dask", scheduler=cluster.scheduler_address),
    )
    files = sorted(
        p.relative_to(tmp_path / "local-prepared") for p in (tmp_path / "local-prepared").rglob("*") if p.is_file()
    )
    assert any(str(f).startswith("shards/") for f in files)

    def same(f):
        return (tmp_path / "local-prepared" / f).read_bytes() == (tmp_path / "dask-prepared" / f).read_bytes()

    assert all(same(f) for f in files if f.name != "meta.json")  # arrays, index, skipped
    meta = [json.loads((tmp_path / f"{name}-prepared/meta.json").read_text()) for name in ("local", "dask")]
    assert [{k: v for k, v in m.items() if k != "manifest_sha256"} for m in meta][0] == {
        k: v for k, v in meta[1].items() if k != "manifest_sha256"
    }
    # (manifest_sha256 differs: the manifests record each download's elapsed_ms)
    metrics = [
        _train_and_evaluate(tmp_path / f"{name}-prepared", tmp_path / f"{name}-model", 8) for name in ("local", "dask")
    ]
    assert metrics[0] == metrics[1] and 0 <= metrics[0]["accuracy"] <= 1


def test_wnids_file_and_its_errors(tmp_path):
    (tmp_path / "w.txt").write_text("# ImageNet-1k subset\nn04194289\n\n  n02834778   # bikes\nn04194289\n")
    assert read_wnids_file(tmp_path / "w.txt") == ["n04194289", "n02834778"]
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "bad.txt").write_text("n04194289\nbikes\n")
    (tmp_path / "urls.txt").write_text("")
    for name, expected in (
        ("missing.txt", "file not found"),
        ("empty.txt", "no wnid in it"),
        ("bad.txt", "line 2: 'bikes'"),
    ):
        proc = run_cli(
            "fetch",
            "--source",
            "imagenet",
            "--url-list",
            "urls.txt",
            "--wnids-file",
            name,
            "--out",
            "ds",
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode == 2 and expected in proc.stderr and name in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "ds").exists()


def test_bad_engine_and_unreachable_scheduler_are_one_line(server, tmp_path):
    (tmp_path / "urls.txt").write_text(f"{A}_1\t{server.file('/a.jpg', jpeg(1))}\n")
    bad = run_cli(
        "fetch",
        "--source",
        "imagenet",
        "--url-list",
        "urls.txt",
        "--wnids",
        A,
        "--engine",
        "spark",
        "--out",
        "ds",
        cwd=tmp_path,
        check=False,
    )
    assert (
        bad.returncode == 2
        and "--engine 'spark'" in bad.stderr
        and "'dask'" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    down = run_cli(
        "fetch",
        "--source",
        "imagenet",
        "--url-list",
        "urls.txt",
        "--wnids",
        A,
        "--layout",
        "shards",
        "--engine",
        "dask",
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--out",
        "ds",
        cwd=tmp_path,
        check=False,
    )
    assert (
        down.returncode == 2
        and "tcp://127.0.0.1:9" in down.stderr
        and "cannot reach" in down.stderr
        and "Traceback" not in down.stderr
    )
    layout_typo = run_cli(
        "fetch", "--source", "imagenet", "--layout", "shard", "--out", "ds", cwd=tmp_path, check=False
    )
    assert layout_typo.returncode == 2 and "'folder'" in layout_typo.stderr and "'shards'" in layout_typo.stderr


def test_engine_bounds_tasks_in_flight():
    from pipeline.core.engine import Engine, EngineParams

    pulled = []

    def tasks():
        for i in range(40):
            pulled.append(i)
            yield i

    with Engine(EngineParams(workers=2)) as engine:
        results = engine.map(abs, tasks())
        first = next(results)
        assert first in range(40) and len(pulled) <= 5  # 2 x workers in flight, plus the one refilled
        assert sorted([first, *results]) == list(range(40))
