"""URL-list fetching (pipeline.fetch.collect in the folder layout, the checks, the imagenet source)
against a scripted server on 127.0.0.1."""

import gzip
import hashlib
import json

import pandas as pd

from pipeline.fetch.checks import FLICKR_PLACEHOLDER_MD5
from pipeline.fetch.collect import Quota, fetch_urls
from pipeline.fetch.params import DownloadSettings, FetchParams
from pipeline.fetch.sources.imagenet import iter_url_file, parse_url_lines
from tests.conftest import kill_at, run_cli
from tests.scripted import ALLOW_LOOPBACK, FAST, big_header_png, jpeg, placeholder_png


def collect(candidates: dict[str, list[str]], quotas: dict[str, Quota], out, settings: DownloadSettings, source: str):
    """Each class's candidate URLs fetched into the folder layout (pipeline.fetch.collect)."""
    rows = [(cls, url) for cls, urls in candidates.items() for url in urls]
    return fetch_urls(rows, quotas, out, FetchParams(layout="folder", download=settings), source)


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
    assert rows[good[0]].status == "success" and rows[good[0]].split == "train"
    assert (
        rows[dup].status == "duplicate" and rows[dup].path == rows[good[0]].path and good[0] in rows[dup].error_message
    )
    assert rows[html].error_message == "HTML page, not an image"
    assert rows[server.url + "/gone.jpg"].error_message.startswith("placeholder")
    assert "scheme" in rows["ftp://x/y.jpg"].error_message
    assert rows[trunc].error_message.startswith("truncated")
    assert rows[tiny].error_message.startswith("too small")
    assert rows[bomb].error_message.startswith("too many pixels")
    assert (
        rows[server.url + "/404.jpg"].status == "failed_to_download"
        and str(rows[server.url + "/404.jpg"].http_status) == "404"
    )
    assert rows[good[1]].split == "train" and rows[good[2]].split == "val"
    assert good[3] not in rows and custom not in rows  # quota met: later candidates never tried
    assert (manifest["error_message"] == "").tolist() == (manifest["status"] == "success").tolist()
    assert result.counts["success"] == 3 and not result.warnings
    files = sorted(p.name for p in (tmp_path / "n00000001").iterdir())
    assert files == sorted(f"{hashlib.sha256(jpeg(i)).hexdigest()}.jpg" for i in range(3))
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["success"] == 3


def test_flickr_placeholder_md5_is_built_in(server, tmp_path, monkeypatch):
    body = placeholder_png()
    monkeypatch.setattr("pipeline.fetch.checks.FLICKR_PLACEHOLDER_MD5", hashlib.md5(body).hexdigest())
    url = server.file("/p.png", body, "image/png")
    collect({"n00000001": [url]}, {"n00000001": Quota(1)}, tmp_path, FAST, "imagenet")
    row = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False).iloc[0]
    assert row.status == "skipped" and row.error_message == "placeholder image"
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

    def strip(p):
        return pd.read_csv(p, keep_default_na=False).drop(columns=["elapsed_ms"])

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
        *ALLOW_LOOPBACK,
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
    assert len(manifest) == 10 and set(manifest.status) == {"success"}
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
    args = [*ALLOW_LOOPBACK, "-S", "fetch.download.concurrency=2", "fetch", "--source", "imagenet",
            "--url-list", "urls.txt", "--wnids", "n00000001", "--per-class", str(n), "--val-per-class", "0",
            "--layout", "folder", "--shard-size", "5", "--out", "ds"]  # fmt: skip
    assert kill_at(args, tmp_path, "fetch.shard", 2), "the fetch finished before its kill: the test tested nothing"
    assert not (tmp_path / "ds/manifest.csv").exists() and (tmp_path / "ds/.incomplete").exists()
    done = sorted((tmp_path / "ds/.shards").glob("*_stats.json"))
    assert 2 <= len(done) < n // 5
    finished = set(
        pd.concat([pd.read_parquet(p.with_name(p.name.replace("_stats.json", ".parquet"))) for p in done]).url
    )
    before = dict(server.hits)

    run_cli(*args, cwd=tmp_path)
    manifest = pd.read_csv(tmp_path / "ds/manifest.csv", keep_default_na=False)
    assert len(manifest) == n and set(manifest.status) == {"success"} and manifest.url.is_unique
    again = {path for path, hits in server.hits.items() if hits > before.get(path, 0)}
    assert not again & {url.removeprefix(server.url) for url in finished}  # finished URLs were not fetched again
    assert len(list((tmp_path / "ds/n00000001").iterdir())) == n  # no partial or temporary files left
    assert not (tmp_path / "ds/.incomplete").exists() and not list((tmp_path / "ds").rglob("*.tmp"))
