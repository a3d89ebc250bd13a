"""scaling: survey and prepare time per image and peak RSS at growing N (should be flat)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.corpus import make_corpus
from benchmarks.measure import best_of
from benchmarks.prepare import ours as prepare_ours
from benchmarks.survey import ours as survey_ours
from benchmarks.survey import read_bytes


def run(work: Path, n: int, rounds: int) -> list[dict]:
    base = max(20, n // 10)  # prepare needs both classes in its 20% validation split
    sizes = (base, 4 * base, 16 * base)  # 1k, 4k, 16k for the full run's n = 10,000
    for size in sizes:
        make_corpus(work.parent / f"corpus-{size}", size)
        read_bytes(work.parent / f"corpus-{size}")
    rows = []
    for name, fn in (("survey", survey_ours), ("prepare", prepare_ours)):
        contenders = {
            size: (fn, work.parent / f"corpus-{size}", *([] if name == "survey" else [work / f"prepared-{size}"]))
            for size in sizes
        }
        best = best_of(rounds, contenders)
        first = best[sizes[0]]
        for size in sizes:
            m = best[size]
            rows.append(
                {
                    "case": "scaling",
                    "measure": f"{name} at N={size}: time per image vs N={sizes[0]}",
                    "rate": size / m["seconds"],
                    "unit": "images/s",
                    "ratio": (m["seconds"] / size) / (first["seconds"] / sizes[0]),
                    "target": "<= 1.15 (linear)",
                    "peak_rss_mb": m["peak_rss_mb"],
                }
            )
        last = best[sizes[-1]]
        rows.append(
            {
                "case": "scaling",
                "measure": f"{name} peak RSS at N={sizes[-1]} vs N={sizes[0]}",
                "rate": last["peak_rss_mb"],
                "unit": "MB",
                "ratio": last["peak_rss_mb"] / first["peak_rss_mb"],
                "target": "<= 1.15 (flat)",
                "peak_rss_mb": last["peak_rss_mb"],
            }
        )
    return rows
