"""dvc_cache: DVC's own cost at dataset scale (issue 19): committing a fetched output to the cache,
checking it out again, and the disk the two take, with DVC's default cache type (reflink,copy: a
copy on ext4) against this repository's (.dvc/config's `cache.type`, hardlink).

Run:  python -m benchmarks dvc_cache            2N = 20,000 images (about 250 MB), about 2.5 minutes on 2 cores
      python -m benchmarks dvc_cache --quick    2,000 images

The data: 2N unique small JPEGs (128x96 noise, about 12 KB each; each unique through a JPEG comment
holding its number), in the two layouts `pipeline fetch` writes: 20 webdataset shards
(`shards/<NNNNN>.tar`, a `.jpg` and a `.json` member per image), and a folder per class (2N files).
DVC's cost grows with files more than with bytes, so the two differ.

Each contender is a fresh git + DVC project whose stage `fetch` declares `data/raw/bench` as its
output. Steps, each a `dvc` process timed from start to exit (its start-up, about 0.5 s, included),
after `sync` so that no earlier write-back is counted:
1. `dvc commit -f fetch` with the output just written there (new files): what `dvc repro` adds
   after a stage's command: hash every file, store it in the cache, link or copy it back.
2. The output deleted, then `dvc checkout`: what a fresh clone's `dvc pull` does once the objects
   are in its cache, and `git checkout` / `dvc exp apply` of another version.
3. Disk: `du -sk --total data .dvc/cache` in one invocation (a hard-linked file counts once),
   against `du -sk data`.
4. First round only: `dvc repro --force`, a rerun whose command writes the same bytes again (a fetch
   param that changes no image, `dvc repro --force`), then the disk again. Here `hardlink,copy` is
   measured too: with a fallback type DVC keeps a rerun's files that the cache already holds as
   copies, which is why .dvc/config lists hardlink alone.
Times are the best of --rounds (2 at most), contenders interleaved. Beside the commit time: its share of the time
`pipeline fetch` took for as many images in fetch_scale (RESULTS.md, start to exit), when recorded.
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import struct
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
from configobj import ConfigObj
from PIL import Image

from benchmarks.startup import command

GAP = (
    "At a small --n the cache's own folders (one per two-hex-digit prefix, up to 256, 4 KB each) weigh "
    "on the disk ratio of the folder layout; from a few thousand files on they are under 1%."
)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
SHARDS = 20
BASES = 64  # distinct noise images; each member is one of them with its own comment
DEFAULT = "reflink,copy"  # DVC's default cache type (a copy where reflinks are not supported)
FALLBACK = "hardlink,copy"  # hardlink with a fallback, measured on the rerun only
TIMEOUT = 900  # seconds for any one dvc command
OUTPUT = "data/raw/bench"
MAX_ROUNDS = 2  # a folder-layout contender takes ~15 s: best of 2 keeps the case near 2 minutes


def configured() -> str:
    """This repository's cache type, from .dvc/config (DVC's default when it sets none)."""
    return ConfigObj(str(ROOT / ".dvc" / "config")).get("cache", {}).get("type", DEFAULT)


# --- the data --------------------------------------------------------------------------------------


@functools.cache
def _bases() -> tuple[bytes, ...]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(BASES):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return tuple(out)


def _jpeg(i: int) -> bytes:
    """Base image i % BASES with a COM segment naming i right after SOI: a valid, unique JPEG."""
    base, comment = _bases()[i % BASES], f"bench image {i}".encode()
    return base[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + base[2:]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def write_data(out: Path, layout: str, images: int) -> Path:
    """`images` images at `out` in `layout` ("shards" or "folder"), the same bytes every time,
    written afresh (as a stage writes its output: new files, nothing linked)."""
    if layout == "shards":
        (out / "shards").mkdir(parents=True)
        for s in range(SHARDS):
            with tarfile.open(out / "shards" / f"{s:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
                for i in range(s * images // SHARDS, (s + 1) * images // SHARDS):
                    _add(tar, f"{i:09d}.jpg", _jpeg(i))
                    _add(tar, f"{i:09d}.json", b'{"class": "%d", "index": %d}' % (i % 2, i))
    else:
        for c in range(2):
            (out / f"class{c}").mkdir(parents=True)
        for i in range(images):
            (out / f"class{i % 2}" / f"{i:09d}.jpg").write_bytes(_jpeg(i))
    return out


# --- running dvc ---------------------------------------------------------------------------------


def dvc(project: Path, *args: str, timed: bool = False) -> tuple[float, float]:
    """Run `dvc ARGS` in `project` (`timed`: after a sync, so that the disk is idle): (seconds, peak
    RSS in MB); fails on an error."""
    if timed:
        os.sync()
    log = project.parent / f"{project.name}.log"
    site = project.parent / f"{project.name}.site"  # DVC's state for the project, not in /var/tmp/dvc
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(site)}
    start = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [*command("dvc"), *args], cwd=project, env=env, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL
        )
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}) in {project}:\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def disk_kb(project: Path, *paths: str) -> int:
    out = subprocess.run(
        ["du", "-sk", "--total", *paths], cwd=project, capture_output=True, text=True, check=True, timeout=300
    ).stdout
    return int(out.splitlines()[-1].split()[0])


def new_project(path: Path, cache_type: str, source: Path) -> Path:
    """A git + DVC project at `path` whose stage `fetch` copies `source` to its output."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True, timeout=60)
    dvc(path, "init", "-q")
    cache = f"[cache]\n    type = {cache_type}\n" if cache_type != DEFAULT else ""
    (path / ".dvc" / "config").write_text(f"[core]\n    analytics = false\n    check_update = false\n{cache}")
    stage = f"  fetch:\n    cmd: cp -R '{source}' {OUTPUT}\n    outs:\n      - {OUTPUT}\n"
    (path / "dvc.yaml").write_text(f"stages:\n{stage}")
    return path


def measure(
    work: Path, name: str, cache_type: str, layout: str, images: int, rerun: bool, checkout: bool = True
) -> dict:
    """One contender's figures (see the module docstring) in a fresh project, deleted after."""
    source = work / f"source-{layout}"  # the rerun's command copies it (the same bytes)
    project = new_project(work / name, cache_type, source)
    write_data(project / OUTPUT, layout, images)  # as the stage's command just wrote it
    result = {}
    result["commit_s"], result["commit_rss_mb"] = dvc(project, "commit", "-f", "fetch", timed=True)
    result["data_kb"] = disk_kb(project, "data")
    result["disk_kb"] = disk_kb(project, "data", ".dvc/cache")
    if checkout:
        shutil.rmtree(project / OUTPUT)
        result["checkout_s"], _ = dvc(project, "checkout", timed=True)
    if rerun:
        dvc(project, "repro", "--force", "fetch")
        result["rerun_disk_kb"] = disk_kb(project, "data", ".dvc/cache")
    shutil.rmtree(project)
    shutil.rmtree(work / f"{name}.site", ignore_errors=True)
    return result


def fetch_rate() -> float | None:
    """`pipeline fetch`'s images/s, start to exit, in fetch_scale's recorded run (RESULTS.md)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    found = re.search(r"\| fetch_scale \| pipeline, start to exit \([\d.]+ s\)[^|]*\| ([\d.]+) images/s", text)
    return float(found[1]) if found else None


# --- the case ------------------------------------------------------------------------------------


def run(work: Path, n: int, rounds: int) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    images = 2 * n
    layouts = ("shards", "folder")
    for layout in layouts:
        write_data(work / f"source-{layout}", layout, images)
    ours = configured()
    contenders = {"default": DEFAULT, "configured": ours}
    best: dict[tuple[str, str], dict] = {}
    for r in range(min(rounds, MAX_ROUNDS)):
        for layout in layouts:
            for name, cache_type in contenders.items():
                m = measure(work, f"{layout}-{name}-{r}", cache_type, layout, images, r == 0 and name == "configured")
                kept = best.setdefault((layout, name), m)
                for key in ("commit_s", "checkout_s"):
                    kept[key] = min(kept[key], m[key])
            if r == 0 and ours != FALLBACK:
                best[(layout, "fallback")] = measure(work, f"{layout}-fallback", FALLBACK, layout, images, True, False)
    rate = fetch_rate()
    rows = []
    for layout in layouts:
        what = f"{SHARDS} shards" if layout == "shards" else f"{images} files"
        d, c = best[(layout, "default")], best[(layout, "configured")]
        mb = d["data_kb"] / 1024

        def row(measure, value, unit, ratio, target="", rss=None):
            return {
                "case": "dvc_cache",
                "measure": measure,
                "rate": value,
                "unit": unit,
                "ratio": ratio,
                "target": target,
                **({"peak_rss_mb": rss} if rss else {}),
            }

        def share(s):
            return f", {100 * s * rate / images:.0f}% of `pipeline fetch`'s time for as many images" if rate else ""

        rows += [
            row(
                f"dvc commit of {images} images in {what} ({mb:.0f} MB), cache.type {DEFAULT} "
                f"({d['commit_s']:.1f} s{share(d['commit_s'])})",
                images / d["commit_s"],
                "images/s",
                1.0,
                rss=d["commit_rss_mb"],
            ),
            row(
                f"dvc commit, {what}, cache.type {ours} ({c['commit_s']:.1f} s{share(c['commit_s'])}), vs {DEFAULT}",
                images / c["commit_s"],
                "images/s",
                d["commit_s"] / c["commit_s"],
                rss=c["commit_rss_mb"],
            ),
            row(
                f"dvc checkout of the output, {what}, cache.type {DEFAULT} ({d['checkout_s']:.1f} s)",
                images / d["checkout_s"],
                "images/s",
                1.0,
            ),
            row(
                f"dvc checkout, {what}, cache.type {ours} ({c['checkout_s']:.1f} s), vs {DEFAULT}",
                images / c["checkout_s"],
                "images/s",
                d["checkout_s"] / c["checkout_s"],
            ),
            row(
                f"disk, data + .dvc/cache vs data alone, {what}, cache.type {DEFAULT}",
                d["disk_kb"] / 1024,
                "MB",
                d["disk_kb"] / d["data_kb"],
            ),
            row(
                f"disk, data + .dvc/cache vs data alone, {what}, cache.type {ours}",
                c["disk_kb"] / 1024,
                "MB",
                c["disk_kb"] / c["data_kb"],
                "<= 1.15 (x data alone)",
            ),
        ]
        if (layout, "fallback") in best:
            f = best[(layout, "fallback")]
            rows.append(
                row(
                    f"disk after `dvc repro --force` rewrote the same bytes, {what}, cache.type {FALLBACK}",
                    f["rerun_disk_kb"] / 1024,
                    "MB",
                    f["rerun_disk_kb"] / f["data_kb"],
                )
            )
        rows.append(
            row(
                f"disk after `dvc repro --force` rewrote the same bytes, {what}, cache.type {ours}",
                c["rerun_disk_kb"] / 1024,
                "MB",
                c["rerun_disk_kb"] / c["data_kb"],
                "<= 1.15 (x data alone)",
            )
        )
    return rows
