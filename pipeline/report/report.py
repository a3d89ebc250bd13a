"""The summary: `reports/summary.md` (the comparison, the survey, links to every plot) and
`reports/summary.html`, the same on one self-contained page with every plot drawn.

The page needs no network and no script: each plot is rendered from its Vega-Lite spec
(`pipeline.report.charts`) to inline SVG, the prediction grids are embedded as PNG `data:` URIs,
and the styles are inline. `dvc plots show` writes a page that loads Vega from a CDN, which stays
blank offline; this one does not. Everything here is derived from files only, so both outputs are
byte-identical for the same inputs.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.core.files import write_text
from pipeline.prepare.survey import shape_records
from pipeline.report import charts
from pipeline.report.compare import Comparison, compare, format_value, read_dataset, to_markdown
from pipeline.report.plots import CONFUSION, CURVES, PREDICTIONS, ROC, THRESHOLDS

SHAPES = "shapes.json"  # the survey's shape histogram (plot data written by the survey stage)
HTML_NAME = "summary.html"


@dataclass(frozen=True)
class Report:
    summary: Path
    html: Path
    archs: list[str]
    plots: list[str]  # the plot files drawn on the page, relative to the plots folder
    missing: list[str]  # plot files the page names but could not draw (not found)


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _link(target: Path, start: Path, text: str | None = None) -> str:
    return f"[{text or target.name}]({_rel(target, start)})"


def _best_line(comparison: Comparison, markdown: bool) -> str:
    frame, sort = comparison.frame, comparison.sort
    best = str(frame.index[0])
    value = frame.at[best, sort] if sort in frame.columns else None
    shown = (
        format_value(value)
        if value == value and value is not None
        else f"no {sort}; accuracy {format_value(frame.at[best, 'accuracy'])}"
    )
    name = f"**{best}**" if markdown else f"<strong>{html.escape(best)}</strong>"
    return f"Best architecture by {f'`{sort}`' if markdown else f'<code>{html.escape(sort)}</code>'}: {name} ({shown})."


# --- Markdown ---------------------------------------------------------------------------------


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


def _plots_section(archs: list[str], plots_dir: Path, out_dir: Path, html_page: Path) -> list[str]:
    lines = [
        "## Plots",
        "",
        f"Every plot below, drawn on one page that works offline: {_link(html_page, out_dir)}. "
        "`dvc plots show` draws them into `dvc_plots/index.html` (`dvc plots diff` compares revisions; "
        "that page loads Vega from the internet).",
        "",
        "| arch | predictions | training curves | accuracy by threshold | ROC | confusion matrix |",
        "|:--|:--|:--|:--|:--|:--|",
    ]
    for arch in archs:
        cells = [_link(plots_dir / arch / name, out_dir) for name in (PREDICTIONS, CURVES, THRESHOLDS, ROC, CONFUSION)]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    lines += ["", f"Image shapes: {_link(plots_dir / SHAPES, out_dir)}.", ""]
    for arch in archs:
        lines += [
            f"### {arch}: validation predictions (blue = right, red = wrong) and the most confident mistakes",
            "",
            f"![{arch} predictions]({_rel(plots_dir / arch / PREDICTIONS, out_dir)})",
            "",
        ]
    return lines


def summary_markdown(
    comparison: Comparison,
    survey: dict,
    plots_dir: Path,
    out: Path,
    table: str | None = None,
    html_page: Path | None = None,
) -> str:
    """The page's text; `table` is compare's Markdown when already written (reports/compare.md)."""
    lines = [
        "# Summary",
        "",
        _best_line(comparison, markdown=True),
        "",
        f"## Architectures, sorted by {comparison.sort}",
        "",
        (table or to_markdown(comparison)).rstrip("\n"),
        "",
        "Quality metrics come from `metrics/<arch>.json` (deterministic; `pipeline metrics diff` compares them across "
        "revisions). Training time and memory vary from run to run, so they stay out of tracked files: "
        "`pipeline compare` shows them on the terminal, from `runs/<arch>/run.json`.",
        "",
    ]
    lines += _survey_section(survey) + [""]
    lines += _plots_section(list(comparison.frame.index), plots_dir, out.parent, html_page or out.with_name(HTML_NAME))
    return "\n".join(lines).rstrip("\n") + "\n"


# --- HTML -------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1180px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
code { background: #f3f3f3; padding: 0 .25rem; border-radius: 3px; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9rem; } th, td { padding: .25rem .6rem; border-bottom: 1px solid #e5e5e5; white-space: nowrap; }
th { background: #f7f7f7; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warning { background: #fff4e5; border-left: 4px solid #f58518; padding: .5rem .8rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5rem 2.5rem; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: .9rem; color: #444; margin-bottom: .3rem; max-width: 640px; }
figure svg, figure img { max-width: 100%; height: auto; display: block; }
figure.missing p { color: #b00; }
"""  # noqa: E501 (the page's bytes)


def _table_html(comparison: Comparison) -> str:
    frame = comparison.frame
    with_data = comparison.mixed
    head = "".join(
        f"<th>{html.escape(str(c))}</th>" for c in ["arch", *frame.columns, *(["data"] if with_data else [])]
    )
    rows = []
    for arch, row in frame.iterrows():
        cells = [f"<th>{html.escape(str(arch))}</th>"] + [f'<td class="num">{format_value(v)}</td>' for v in row]
        if with_data:
            cells.append(f"<td>{html.escape(comparison.datasets[str(arch)])}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


class _Figures:
    """The page's figures, each a declared plot file drawn from its data (or marked missing)."""

    def __init__(self, plots_dir: Path):
        self.plots_dir = plots_dir
        self.drawn: list[str] = []
        self.missing: list[str] = []

    def _read(self, rel: str):
        path = self.plots_dir / rel
        return json.loads(path.read_text()) if path.exists() else None

    def _figure(self, rel: str, caption: str, body: str | None) -> str:
        if body is None:
            self.missing.append(rel)
            return (
                f'<figure class="plot missing" data-plot="{html.escape(rel)}"><figcaption>{html.escape(caption)}'
                f"</figcaption><p>not found: {html.escape(rel)}</p></figure>"
            )
        self.drawn.append(rel)
        return (
            f'<figure class="plot" data-plot="{html.escape(rel)}"><figcaption>{html.escape(caption)}'
            f"</figcaption>{body}</figure>"
        )

    def chart(self, rel: str, caption: str, make_spec, records: list | None = None) -> str:
        """The plot file `rel` (or `records`, its data computed here) drawn by `make_spec`."""
        records = self._read(rel) if records is None else records
        prefix = "p-" + "".join(c if c.isalnum() else "-" for c in rel)
        return self._figure(rel, caption, None if records is None else charts.to_svg(make_spec(records), prefix))

    def image(self, rel: str, caption: str, alt: str) -> str:
        path = self.plots_dir / rel
        body = None
        if path.exists():
            encoded = base64.b64encode(path.read_bytes()).decode()
            body = f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'
        return self._figure(rel, caption, body)


def _arch_section(figures: _Figures, arch: str, metrics: dict, classes: list[str] | None) -> str:
    best = metrics.get("best_threshold")
    auc = metrics.get("roc_auc")
    binary = best is not None
    sweep = (
        f"best {format_value(best)}: {format_value(metrics.get('best_threshold_accuracy'))}"
        if binary
        else "one-vs-rest, every class's probability"
    )

    def confusion(records):
        names = (
            classes
            if classes and {r["actual"] for r in records} | {r["predicted"] for r in records} <= set(classes)
            else sorted({r["actual"] for r in records} | {r["predicted"] for r in records})
        )
        return charts.confusion(charts.confusion_counts(records, names), names)

    parts = [
        figures.chart(
            f"{arch}/{CURVES}", "Training curves: loss and accuracy per epoch, train and validation", charts.curves
        ),
        figures.chart(
            f"{arch}/{THRESHOLDS}", f"Validation accuracy by threshold ({sweep})", lambda r: charts.thresholds(r, best)
        ),
        figures.chart(
            f"{arch}/{ROC}",
            f"ROC curve (AUC {format_value(auc)})" if auc is not None else "ROC curve (one-vs-rest, micro-averaged)",
            charts.roc,
        ),
        figures.chart(
            f"{arch}/{CONFUSION}", "Confusion matrix: validation images by actual and predicted class", confusion
        ),
        figures.image(
            f"{arch}/{PREDICTIONS}",
            "Validation sample (blue = right, red = wrong) and the most confident mistakes",
            f"{arch} predictions",
        ),
    ]
    return (
        f'<h2 id="arch-{html.escape(arch)}">{html.escape(arch)}</h2>\n<div class="plots">\n'
        + "\n".join(parts)
        + "\n</div>"
    )


def summary_html(comparison: Comparison, survey: dict, plots_dir: Path, metrics_dir: Path) -> tuple[str, _Figures]:
    figures = _Figures(plots_dir)
    note_class = "warning" if comparison.mixed else "note"
    h_w = "x".join(map(str, survey.get("most_common_shape", []))) or "none"
    shape_figure = figures.chart(
        SHAPES, "Image shapes in the dataset, most common first", charts.shapes, shape_records(survey)
    )
    sections = []
    for arch in comparison.frame.index:
        metrics_file = metrics_dir / f"{arch}.json"
        metrics = json.loads(metrics_file.read_text())
        identity = read_dataset(metrics_file)
        sections.append(_arch_section(figures, str(arch), metrics, identity.get("classes") if identity else None))
    fallback = (
        f"<p>Without {html.escape(comparison.sort)} (ranked by accuracy): "
        f"{html.escape(', '.join(comparison.fallback))}.</p>"
        if comparison.fallback
        else ""
    )
    body = f"""<h1>Summary</h1>
<p>{_best_line(comparison, markdown=False)}</p>
<p class="{note_class}">{html.escape(comparison.data_note())}</p>
<h2>Architectures, sorted by {html.escape(comparison.sort)}</h2>
{_table_html(comparison)}
{fallback}
<p>Quality metrics from <code>metrics/&lt;arch&gt;.json</code>. Training time and memory vary from run to run: <code>pipeline compare</code> shows them on the terminal.</p>
<h2>Image shapes (survey)</h2>
<p>{survey.get("images", 0):,} images read from their headers, {survey.get("unreadable", 0):,} unreadable; most common shape (height x width): <strong>{html.escape(h_w)}</strong>.</p>
<div class="plots">
{shape_figure}
</div>
{chr(10).join(sections)}
"""  # noqa: E501 (the page's bytes)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Summary: {html.escape(", ".join(map(str, comparison.frame.index)))}</title>
<style>{STYLE}</style>
</head>
<body>
{body}</body>
</html>
"""
    return page, figures


def write_report(
    metrics_dir: Path,
    survey_json: Path,
    plots_dir: Path,
    out: Path,
    sort: str,
    compare_md: Path | None = None,
    html_out: Path | None = None,
) -> Report:
    """Write the summary page (Markdown) and, at `html_out` (default: summary.html beside it), the
    self-contained HTML page; `compare_md` (compare's table) is embedded when given."""
    for path in (survey_json, compare_md):
        if path is not None and not path.exists():
            raise InputError(
                f"file not found: {path} (run `dvc repro`, "
                "or `pipeline survey-shapes --out` / `pipeline compare --out` first)"
            )
    survey = json.loads(survey_json.read_text())
    comparison = compare(metrics_dir, sort)
    table = compare_md.read_text() if compare_md is not None else None
    html_out = html_out or out.with_name(HTML_NAME)
    write_text(out, summary_markdown(comparison, survey, plots_dir, out, table, html_out))
    page, figures = summary_html(comparison, survey, plots_dir, metrics_dir)
    write_text(html_out, page)
    return Report(out, html_out, list(map(str, comparison.frame.index)), figures.drawn, figures.missing)
