"""python -m benchmarks [NAME ...] [--quick] [--out FILE]: run ratio benchmarks and print a table."""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import re
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

CASES = ["survey", "prepare", "fetch", "train_input", "scaling", "startup", "fetch_scale", "dvc_cache", "audit"]
RESULTS = Path(__file__).with_name("RESULTS.md")


def _environment() -> str:
    import cv2
    import numpy
    import PIL

    return (
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"OpenCV {cv2.__version__}, Pillow {PIL.__version__}"
    )


def to_markdown(rows: list[dict], quick: bool) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"{'Quick' if quick else 'Full'} run: {_environment()}.",
        "Every ratio is against a baseline measured in the same run.",
        "",
        "| case | measure | rate | ratio | target | met | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['measure']} | {r['rate']:.1f} {r['unit']} | {r['ratio']:.2f} | {r['target']} "
        f"| {met(r)} | {_rss(r)} |"
        for r in rows
    ]
    targets = [r for r in rows if met(r)]
    missed = [r for r in targets if met(r) == "no"]
    lines += ["", f"Targets met: {len(targets) - len(missed)} of {len(targets)}."]
    for case in dict.fromkeys(r["case"] for r in missed):
        gap = getattr(importlib.import_module(f"benchmarks.{case}"), "GAP", "")
        lines += ["", f"**{case}** misses its target. {gap}".rstrip()]
    return "\n".join(lines) + "\n"


def met(row: dict) -> str:
    """ "yes"/"no" for a row with a target ("">= 20x", "<= 1.15 (linear)"...), "" for one without."""
    target = re.match(r"([<>]=)\s*([\d.]+)", row["target"])
    if target is None:
        return ""
    bound = float(target[2])
    return "yes" if (row["ratio"] >= bound if target[1] == ">=" else row["ratio"] <= bound) else "no"


def _rss(row: dict) -> str:
    return f"{row['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in row else ""


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"cases to run (default all): {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="smaller corpora (1,000 images), a few minutes in all")
    parser.add_argument("--n", type=int, help="corpus size [default: 10,000, or 1,000 with --quick]")
    parser.add_argument(
        "--rounds",
        type=int,
        help="measure each contender this many times, interleaved, keeping its best [default: 3, or 1 with --quick]",
    )
    parser.add_argument(
        "--out", type=Path, help=f"write the Markdown table here [default: {RESULTS} for a full run of every case]"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}; valid: {', '.join(CASES)}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        for name in args.names or CASES:
            rows += importlib.import_module(f"benchmarks.{name}").run(
                Path(tmp) / name, args.n or (1000 if args.quick else 10_000), args.rounds or (1 if args.quick else 3)
            )
    table = Table("case", "measure", "rate", "ratio", "target", "met", "peak RSS", title="benchmarks")
    for r in rows:
        table.add_row(
            r["case"], r["measure"], f"{r['rate']:.1f} {r['unit']}", f"{r['ratio']:.2f}", r["target"], met(r), _rss(r)
        )
    Console().print(table)
    out = args.out or (None if args.quick or args.names else RESULTS)  # a partial run never overwrites the full table
    if out is not None:
        out.write_text(to_markdown(rows, args.quick))
    return rows


if __name__ == "__main__":
    main()
