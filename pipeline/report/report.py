"""The summary: `reports/summary.md` (the comparison, the survey, the audit when given, links to every
plot) and `reports/summary.html`, the same on one self-contained page with every plot drawn.

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

from pipeline.audit.sheets import DUPLICATES, LABEL_ISSUES, MAX_MEMBERS
from pipeline.core.errors import InputError
from pipeline.core.files import write_text
from pipeline.prepare.survey import shape_records
from pipeline.report import charts
from pipeline.report.compare import Comparison, compare, format_value, read_dataset, to_markdown
from pipeline.report.plots import CONFUSION, CURVES, PREDICTIONS, ROC, THRESHOLDS

SHAPES = "shapes.json"  # the survey's shape histogram (plot data written by the survey stage)
HTML_NAME = "summary.html"
AUDIT_PLOTS = "audit"  # the audit's contact sheets, under the plots folder
TOP_GROUPS = 10  # duplicate groups listed on the page
TOP_ISSUES = 20  # label-issue candidates listed on the page
TOP_REASONS = 3  # failure reasons per class in the balance table


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


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def audit_verdict(audit: dict) -> str:
    """One line: the duplicate groups (how many across classes, across train/validation), the
    label-issue candidates and the unreadable files; or that none was found."""
    counts = audit.get("summary", {})
    groups, issues = counts.get("duplicate_groups", 0), counts.get("label_issues", 0)
    unreadable = counts.get("unreadable", 0)
    computed = audit.get("label_issues_computed", False)
    if not groups and not issues and not unreadable:
        return (
            "No duplicates, leakage or label issues found"
            if computed
            else "No duplicates or leakage found; label issues not computed"
        )
    detail = [
        f"{n:,} {scope}"
        for n, scope in (
            (counts.get("cross_class_groups", 0), "across classes"),
            (counts.get("leakage_groups", 0), "across train/validation"),
        )
        if n
    ]
    parts = [
        _count(groups, "duplicate group", "duplicate groups") + (f" ({', '.join(detail)})" if detail else "")
        if groups
        else "no duplicate groups",
        _count(issues, "label-issue candidate", "label-issue candidates") if computed else "label issues not computed",
    ]
    if unreadable:
        parts.append(_count(unreadable, "unreadable file", "unreadable files"))
    line = ", ".join(parts)
    return line[0].upper() + line[1:]


def _audit_counts(audit: dict) -> str:
    """The dataset and the counts behind the verdict, in one sentence (plain text)."""
    dataset, method, counts = audit.get("dataset", {}), audit.get("hash", {}), audit.get("summary", {})
    issues = (
        f"{counts.get('label_issues', 0):,} label-issue candidates"
        if audit.get("label_issues_computed")
        else "label issues not computed"
    )
    return (
        f"{dataset.get('items', 0):,} images in {dataset.get('root', '?')} ({dataset.get('source', '?')}, "
        f"{dataset.get('layout', '?')}): {counts.get('exact_groups', 0):,} exact and {counts.get('near_groups', 0):,} "
        f"near duplicate groups ({method.get('method', '?')}, {method.get('bits', '?')} bits, near = within "
        f"{method.get('near_distance', '?')} bits), {counts.get('items_in_groups', 0):,} images in groups; "
        f"{issues}; {counts.get('unreadable', 0):,} unreadable."
    )


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


def _audit_section(audit: dict, audit_json: Path, plots_dir: Path, out_dir: Path) -> list[str]:
    sheets = [_link(plots_dir / AUDIT_PLOTS / DUPLICATES, out_dir)]
    if audit.get("label_issues_computed"):
        sheets.append(_link(plots_dir / AUDIT_PLOTS / LABEL_ISSUES, out_dir))
    return [
        "## Audit",
        "",
        f"**{audit_verdict(audit)}.**",
        "",
        _audit_counts(audit),
        "",
        f"Every group and candidate: {_link(audit_json, out_dir)}; contact sheets: {', '.join(sheets)}.",
    ]


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
    audit_json: Path | None = None,
) -> str:
    """The page's text; `table` is compare's Markdown when already written (reports/compare.md);
    `audit_json` (the audit's report) is summarized and linked when given."""
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
    if audit_json is not None:
        lines += _audit_section(json.loads(audit_json.read_text()), audit_json, plots_dir, out.parent) + [""]
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


def _html_table(head: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """A table of cells already escaped; the columns in `numeric` right-aligned."""
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<div class="wide"><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>'


def _balance_html(balance: list[dict]) -> str:
    """Per class: items, share and, for a downloaded dataset (one with a manifest), each download
    status's count (every status any class has) and the most frequent failure reasons."""
    statuses = list(dict.fromkeys(s for row in balance for s in row.get("statuses", {})))
    rows = []
    for row in balance:
        cells = [html.escape(str(row.get("class", ""))), f"{row.get('items', 0):,}", f"{row.get('share', 0):.1%}"]
        if statuses:
            reasons = sorted(row.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
            cells += [f"{row.get('statuses', {}).get(s, 0):,}" for s in statuses]
            cells.append(html.escape(", ".join(f"{reason} ({n:,})" for reason, n in reasons)))
        rows.append(cells)
    head = ["class", "items", "share", *map(html.escape, statuses), *(["top failure reasons"] if statuses else [])]
    return _html_table(head, rows, set(range(1, 3 + len(statuses))))


def _group_scope(group: dict) -> str:
    scopes = ["across classes"] * bool(group.get("cross_class")) + ["train/validation"] * bool(group.get("leakage"))
    return ", ".join(scopes) or "same class, same split"


def _member_html(member: dict) -> str:
    where = [str(w) for w in (member.get("class"), member.get("split")) if w]
    where.append(f"distance {member.get('distance', 0)}")
    return f"<code>{html.escape(str(member.get('path', '')))}</code> ({html.escape(', '.join(where))})"


def _groups_html(groups: list[dict]) -> str:
    rows = []
    for number, group in enumerate(groups[:TOP_GROUPS], 1):
        members = group.get("members", [])
        shown = [_member_html(m) for m in members[:MAX_MEMBERS]]
        if len(members) > MAX_MEMBERS:
            shown.append(f"+{len(members) - MAX_MEMBERS} more")
        rows.append(
            [
                f"#{number}",
                html.escape(str(group.get("kind", ""))),
                html.escape(_group_scope(group)),
                str(group.get("max_distance", 0)),
                "<br>".join(shown),
            ]
        )
    more = f"<p>The first {TOP_GROUPS} of {len(groups):,} groups; every group is in the audit report.</p>"
    return _html_table(["#", "kind", "scope", "max distance", "members"], rows, {3}) + (
        more if len(groups) > TOP_GROUPS else ""
    )


def _issues_html(issues: list[dict]) -> str:
    rows = [
        [
            f"<code>{html.escape(str(issue.get('path', '')))}</code>",
            html.escape(str(issue.get("given", ""))),
            html.escape(str(issue.get("suggested", ""))),
            f"{issue.get('score', 0):.3f}",
        ]
        for issue in issues[:TOP_ISSUES]
    ]
    more = f"<p>The first {TOP_ISSUES} of {len(issues):,} candidates; every one is in the audit report.</p>"
    return _html_table(["path", "given", "suggested", "score"], rows, {3}) + (more if len(issues) > TOP_ISSUES else "")


def _audit_html(figures: _Figures, audit: dict) -> str:
    """The audit: verdict, how to read it, class balance, duplicate groups and label issues, with their sheets."""
    near = html.escape(str(audit.get("hash", {}).get("near_distance", "?")))
    groups, issues = audit.get("duplicate_groups", []), audit.get("label_issues", [])
    parts = [
        '<h2 id="audit">Audit</h2>',
        f"<p><strong>{html.escape(audit_verdict(audit))}.</strong></p>",
        f"<p>{html.escape(_audit_counts(audit))}</p>",
        "<p>How to read this: <em>exact</em> duplicates have the same bytes; <em>near</em> duplicates have "
        f"perceptual hashes within {near} bits of each other. A group <em>across classes</em> is the same picture "
        "under two labels (one of them is wrong). <em>Leakage</em> is a validation image that duplicates a training "
        "image: it inflates validation accuracy (set <code>prepare.dedupe: near</code>). <em>Label issues</em> are "
        "validation images whose given label the model finds unlikely (cleanlab's confident learning on "
        "out-of-sample probabilities), lowest score first.</p>",
        "<h3>Class balance</h3>",
        _balance_html(audit.get("balance", [])),
        "<h3>Duplicate groups</h3>",
        _groups_html(groups) if groups else "<p>No duplicate groups.</p>",
        '<div class="plots">',
        figures.image(
            f"{AUDIT_PLOTS}/{DUPLICATES}",
            "Duplicate groups, one row each (numbered as in the table): class, split and distance under each image",
            "duplicate groups",
        ),
        "</div>",
        "<h3>Label issues</h3>",
    ]
    if audit.get("label_issues_computed"):
        parts += [
            _issues_html(issues) if issues else "<p>No label-issue candidates.</p>",
            '<div class="plots">',
            figures.image(
                f"{AUDIT_PLOTS}/{LABEL_ISSUES}", "Label-issue candidates, lowest score first", "label-issue candidates"
            ),
            "</div>",
        ]
    else:
        parts.append(
            "<p>Not computed: label issues need the prepared data and a trained model "
            "(<code>pipeline audit --prepared ... --model ...</code>).</p>"
        )
    return "\n".join(parts)


def summary_html(
    comparison: Comparison, survey: dict, plots_dir: Path, metrics_dir: Path, audit_json: Path | None = None
) -> tuple[str, _Figures]:
    """The page and its figures; `audit_json` (the audit's report) adds the audit section when given."""
    figures = _Figures(plots_dir)
    note_class = "warning" if comparison.mixed else "note"
    h_w = "x".join(map(str, survey.get("most_common_shape", []))) or "none"
    shape_figure = figures.chart(
        SHAPES, "Image shapes in the dataset, most common first", charts.shapes, shape_records(survey)
    )
    audit = "" if audit_json is None else _audit_html(figures, json.loads(audit_json.read_text())) + "\n"
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
{audit}{chr(10).join(sections)}
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
    audit_json: Path | None = None,
) -> Report:
    """Write the summary page (Markdown) and, at `html_out` (default: summary.html beside it), the
    self-contained HTML page; `compare_md` (compare's table) is embedded when given, and `audit_json`
    (the audit's report) adds an audit section to both."""
    for path in (survey_json, compare_md):
        if path is not None and not path.exists():
            raise InputError(
                f"file not found: {path} (run `dvc repro`, "
                "or `pipeline survey-shapes --out` / `pipeline compare --out` first)"
            )
    if audit_json is not None and not audit_json.exists():
        raise InputError(f"file not found: {audit_json} (run `pipeline audit` or `dvc repro` first)")
    survey = json.loads(survey_json.read_text())
    comparison = compare(metrics_dir, sort)
    table = compare_md.read_text() if compare_md is not None else None
    html_out = html_out or out.with_name(HTML_NAME)
    write_text(out, summary_markdown(comparison, survey, plots_dir, out, table, html_out, audit_json))
    page, figures = summary_html(comparison, survey, plots_dir, metrics_dir, audit_json)
    write_text(html_out, page)
    return Report(out, html_out, list(map(str, comparison.frame.index)), figures.drawn, figures.missing)
