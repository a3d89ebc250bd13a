"""img2dataset's own webdataset output, imported with `--source webdataset`, is the same dataset as
the same URLs fetched directly by the imagenet URL-list source: the same images (SHA-256) in the
same classes, the same counts, the same urls (issue 19). img2dataset runs in its own environment
(benchmarks/.venv-img2dataset, built by the fetch_scale benchmark from the `bench` pin), against
images served from 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest

from benchmarks.fetch_scale import img2dataset_exe
from tests.conftest import run_cli
from tests.scripted import ALLOW_LOOPBACK, jpeg
from tests.test_webdataset_source import stored

A, B = "n00000001", "n00000002"
LIVE = {A: 10, B: 10}  # images per class that the server has
DEAD = {A: 2, B: 1}  # URLs per class that answer 404


def ok_urls(root) -> dict[str, set[str]]:
    frame = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    frame = frame[frame["status"] == "success"]
    return {cls: set(group["url"]) for cls, group in frame.groupby("class")}


def counts(root) -> dict[str, int]:
    return json.loads((root / "summary.json").read_text())["counts"]


@pytest.mark.slow
def test_img2dataset_output_imports_as_the_same_dataset_as_a_direct_fetch(server, tiny_project, monkeypatch):
    with monkeypatch.context() as patch:
        patch.delenv("PYTEST_CURRENT_TEST", raising=False)  # (fetch_scale skips img2dataset under pytest)
        notes: list[str] = []
        exe = img2dataset_exe(notes)
    if exe is None:
        pytest.skip(f"img2dataset cannot be installed here (no registry access?): {'; '.join(notes)}")
    urls: dict[str, list[str]] = {A: [], B: []}
    for k, cls in enumerate((A, B)):
        urls[cls] += [f"{server.url}/dead-{cls}-{i}.jpg" for i in range(DEAD[cls])]  # first: tried for certain
        urls[cls] += [server.file(f"/{cls}-{i}.jpg", jpeg(100 * k + i)) for i in range(LIVE[cls])]
    (tiny_project / "urls.csv").write_text(
        "url,caption\n" + "".join(f"{url},{cls}\n" for cls in (A, B) for url in urls[cls])
    )
    (tiny_project / "urls.txt").write_text("".join(f"{c}_{i}\t{u}\n" for c in (A, B) for i, u in enumerate(urls[c])))

    cmd = [
        str(exe), "--url_list", "urls.csv", "--input_format", "csv", "--url_col", "url", "--caption_col", "caption",
        "--output_format", "webdataset", "--output_folder", "i2d", "--number_sample_per_shard", "8",
        "--processes_count", "1", "--thread_count", "4", "--resize_mode", "no", "--skip_reencode", "True",
        "--extract_exif", "False", "--disallowed_header_directives", "[]", "--timeout", "10", "--retries", "0",
        "--enable_wandb", "False",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}  # (no update check over the network)
    ran = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert len(list((tiny_project / "i2d").glob("*.tar"))) == 3 and len(list((tiny_project / "i2d").glob("*.parquet")))

    run_cli(
        "-S", "fetch.webdataset.path=i2d", "-S", "fetch.webdataset.label=txt",
        "fetch", "--source", "webdataset", "--out", "imported", cwd=tiny_project,
    )  # fmt: skip
    run_cli(
        *ALLOW_LOOPBACK, "fetch", "--source", "imagenet", "--url-list", "urls.txt", "--wnids", f"{A},{B}",
        "--per-class", str(max(LIVE.values())), "--val-per-class", "0", "--layout", "folder", "--out", "direct",
        cwd=tiny_project,
    )  # fmt: skip
    imported, direct = tiny_project / "imported", tiny_project / "direct"

    assert json.loads((imported / "dataset.json").read_text())["classes"] == [A, B]
    assert json.loads((direct / "dataset.json").read_text())["classes"] == [A, B]
    assert stored(imported) == stored(direct) and {c: len(s) for c, s in stored(imported).items()} == LIVE
    assert ok_urls(imported) == ok_urls(direct) == {cls: set(urls[cls][DEAD[cls] :]) for cls in (A, B)}
    dead, live = sum(DEAD.values()), sum(LIVE.values())
    assert counts(imported) == counts(direct) == {"failed_to_download": dead, "success": live}  # one vocabulary
    frame = pd.read_csv(imported / "manifest.csv", dtype=str, keep_default_na=False)
    failed = frame[frame["status"] == "failed_to_download"]
    assert set(failed["url"]) == {u for cls in (A, B) for u in urls[cls][: DEAD[cls]]}
    assert all("404" in reason for reason in failed["error_message"])
    assert sorted(failed["class"]) == sorted(cls for cls in (A, B) for _ in range(DEAD[cls]))
