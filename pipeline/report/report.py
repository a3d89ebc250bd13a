"""reports/summary.md: the comparison table, the shape survey and links to every plot, in one page.

Also writes the survey's shape histogram as DVC plot data (`plots/shapes.json`, records of
{shape, count}: the most common shapes, the rest summed into one "other" bar). Everything here is
derived from files only, so the outputs are byte-identical for the same inputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.report.compare import compare, format_value, to_markdown
from pipeline.core.errors import InputError
from pipeline.core.files import write_text
from pipeline.report.plots import CONFUSION, PREDICTIONS, ROC, THRESHOLDS, write_records

SHAPES = "shapes.json"
LIVE_PLOTS = "plots/metrics"  # where dvclive writes per-epoch metrics inside its folder
TOP_SHAPES = 15


@dataclass(frozen=True)
class Report:
    summary: Path
    shapes: Path
    archs: list[str]


def shape_records(survey: dict, top: int = TOP_SHAPES) -> list[dict]:
    """The `top` most common shapes as bars, and one "other" bar for the rest (the survey lists them most common first)."""
    shapes = survey.get("shapes", [])
    records = [{"shape": f"{s['height']}x{s['width']}", "count": s["count"]} for s in shapes[:top]]
    rest = shapes[top:]
    if rest:
        records.append({"shape": f"other ({len(rest)} shapes)", "count": sum(s["count"] for s in rest)})
    return records


def _link(target: Path, start: Path, text: str | None = None) -> str:
    rel = Path(os.path.relpath(target, start)).as_posix()
    return f"[{text or target.name}]({rel})"


def _survey_section(survey: dict) -> list[str]:
    h_w = "x".join(map(str, survey.get("most_common_shape", []))) or "none"
    lines = [
        "## Image shapes (survey)",
        "",
        f"{survey.get('images', 0):,} images read from their headers, {survey.get('unreadable', 0):,} unreadable; "
        f"most common shape (height x width): **{h_w}**. The input size is this shape times `prepare.scale` "
        "(or `prepare.size`).",
        "",
        "| shape | images |",
        "|:--|--:|",
    ]
    lines += [f"| {r['shape']} | {r['count']:,} |" for r in shape_records(survey, 10)]
    return lines


def _plots_section(archs: list[str], plots_dir: Path, live_dir: Path | None, out_dir: Path) -> list[str]:
    lines = [
        "## Plots",
        "",
        "`dvc plots show` draws every plot below into `dvc_plots/index.html` (`dvc plots diff` compares revisions).",
        "",
        "| arch | predictions | accuracy by threshold | ROC | confusion matrix |" + (" training curves |" if live_dir else ""),
        "|:--|:--|:--|:--|:--|" + (":--|" if live_dir else ""),
    ]
    for arch in archs:
        cells = [_link(plots_dir / arch / name, out_dir) for name in (PREDICTIONS, THRESHOLDS, ROC, CONFUSION)]
        if live_dir:
            cells.append(_link(live_dir / arch / LIVE_PLOTS, out_dir, "per epoch (dvclive)"))
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    lines += ["", f"Image shapes: {_link(plots_dir / SHAPES, out_dir)}.", ""]
    for arch in archs:
        lines += [
            f"### {arch}: validation predictions (blue = right, red = wrong) and the most confident mistakes",
            "",
            f"![{arch} predictions]({Path(os.path.relpath(plots_dir / arch / PREDICTIONS, out_dir)).as_posix()})",
            "",
        ]
    return lines


def summary_markdown(
    metrics_dir: Path, survey: dict, plots_dir: Path, out: Path, sort: str, table: str | None = None, live_dir: Path | None = None
) -> tuple[str, list[str]]:
    """The page's text and its architectures; `table` is compare's Markdown when already written (reports/compare.md)."""
    frame = compare(metrics_dir, sort)
    archs = list(frame.index)
    best = archs[0]
    lines = [
        "# Summary",
        "",
        f"Best architecture by `{sort}`: **{best}** ({format_value(frame.loc[best, sort])}).",
        "",
        f"## Architectures, sorted by {sort}",
        "",
        (table or to_markdown(frame)).rstrip("\n"),
        "",
        "Quality metrics come from `metrics/<arch>.json` (deterministic; `pipeline metrics diff` compares them "
        "across revisions); `train_seconds` and `peak_rss_mb` from `metrics/<arch>-run.json` (they vary run to run).",
        "",
    ]
    lines += _survey_section(survey) + [""]
    lines += _plots_section(archs, plots_dir, live_dir, out.parent)
    return "\n".join(lines).rstrip("\n") + "\n", archs


def write_report(
    metrics_dir: Path, survey_json: Path, plots_dir: Path, out: Path, sort: str, compare_md: Path | None = None, live_dir: Path | None = None
) -> Report:
    """Write the summary page and the shape histogram; `compare_md` (compare's table) is embedded when
    given; `live_dir` (dvclive's folder, one subfolder per arch) adds links to the training curves."""
    for path in (survey_json, compare_md):
        if path is not None and not path.exists():
            raise InputError(f"file not found: {path} (run `dvc repro`, or `pipeline survey-shapes` / `pipeline compare --out` first)")
    survey = json.loads(survey_json.read_text())
    table = compare_md.read_text() if compare_md is not None else None
    text, archs = summary_markdown(metrics_dir, survey, plots_dir, out, sort, table, live_dir)
    write_text(out, text)
    write_records(plots_dir / SHAPES, shape_records(survey))
    return Report(out, plots_dir / SHAPES, archs)
