"""scaling: survey and prepare time per image and peak RSS at growing N (should be flat)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.corpus import make_corpus
from benchmarks.measure import measure
from benchmarks.prepare import ours as prepare_ours
from benchmarks.survey import ours as survey_ours, read_bytes


def run(work: Path, n: int) -> list[dict]:
    sizes = (n // 10, 4 * n // 10, 16 * n // 10)  # 1k, 4k, 16k for the full run's n = 10,000
    rows = []
    for name, fn in (("survey", survey_ours), ("prepare", prepare_ours)):
        first = None
        for n in sizes:
            root = work.parent / f"corpus-{n}"
            make_corpus(root, n)
            read_bytes(root)
            args = (root,) if name == "survey" else (root, work / f"prepared-{n}")
            m = measure(fn, *args)
            per_image = m["seconds"] / n
            first = first or (per_image, m["peak_rss_mb"])
            rows.append({
                "case": "scaling", "measure": f"{name} at N={n}: time per image vs N={sizes[0]}", "rate": n / m["seconds"],
                "unit": "images/s", "ratio": per_image / first[0], "target": "<= 1.15 (linear)", "peak_rss_mb": m["peak_rss_mb"],
            })
    return rows
