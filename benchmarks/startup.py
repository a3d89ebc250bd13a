"""startup: `pipeline --help` against `dvc --help`, the time every stage and every help screen pays
before doing anything (best of several runs each, interleaved, each a fresh process)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

RUNS = 5  # per round: a start takes a fraction of a second, so a few more tries cost little


def command(name: str) -> list[str]:
    """The installed console script, as a user runs it; else the module, for a checkout without it."""
    script = shutil.which(name)
    return [script] if script else [sys.executable, "-m", name]


def seconds(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(work: Path, n: int, rounds: int) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)  # no params.yaml there: check-params validates the defaults
    contenders = {
        "dvc --help": [*command("dvc"), "--help"],
        "pipeline --help": [*command("pipeline"), "--help"],
        "pipeline check-params": [*command("pipeline"), "check-params"],
    }
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds * RUNS):
        for name, args in contenders.items():
            best[name] = min(best[name], seconds(args, work))
    dvc = best["dvc --help"]

    def row(measure, s, ratio, target):
        return {
            "case": "startup",
            "measure": measure,
            "rate": 1 / s,
            "unit": "starts/s",
            "ratio": ratio,
            "target": target,
        }

    return [
        row(f"dvc --help ({1000 * dvc:.0f} ms)", dvc, 1.0, ""),
        row(
            f"pipeline --help ({1000 * best['pipeline --help']:.0f} ms): time vs dvc --help",
            best["pipeline --help"],
            best["pipeline --help"] / dvc,
            "<= 2.0 (x dvc's time)",
        ),
        row(
            f"pipeline check-params ({1000 * best['pipeline check-params']:.0f} ms): time vs dvc --help",
            best["pipeline check-params"],
            best["pipeline check-params"] / dvc,
            "",
        ),
    ]
