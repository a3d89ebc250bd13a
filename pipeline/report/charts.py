"""Vega-Lite specifications of the plots, and their rendering to SVG without a browser or a network.

The summary page (`reports/summary.html`) draws every plot from these specs, rendered to inline SVG
by vl-convert (Vega and Vega-Lite bundled in a Python wheel), so it needs no script and no CDN.
Two of them are also DVC plot templates (`.dvc/plots/`), for what DVC's built-in templates draw
poorly: the training curves (train and validation overlaid, one chart per metric) and the confusion
matrix with its counts shown (DVC's own template, with its "show values" box ticked).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from pipeline.core.files import write_text

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # a name only: nothing is fetched
DVC_DATA, DVC_TITLE = "<DVC_METRIC_DATA>", "<DVC_METRIC_TITLE>"  # DVC's template anchors
SPLIT_COLORS = {"train": "#4c78a8", "validation": "#f58518"}
TEMPLATES_DIR = Path(".dvc/plots")  # where DVC looks for `template: <name>`
CURVES_TEMPLATE, CONFUSION_TEMPLATE = "curves", "confusion_counts"
WIDTH = 300


def _base(values, title: str = "") -> dict:
    spec: dict = {"$schema": SCHEMA, "data": {"values": values}}
    if title:
        spec["title"] = title
    return spec


def curves(values, title: str = "", revisions: bool = False) -> dict:
    """Loss and accuracy per epoch, side by side, train and validation overlaid in each
    (records {epoch, metric, split, value}). With `revisions` (DVC), each revision gets its own dash."""
    encoding: dict = {
        "x": {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"tickMinStep": 1, "format": "d"}},
        "y": {"field": "value", "type": "quantitative", "title": None, "scale": {"zero": False}},
        "color": {
            "field": "split",
            "type": "nominal",
            "title": None,
            "scale": {"domain": list(SPLIT_COLORS), "range": list(SPLIT_COLORS.values())},
        },
        "tooltip": [{"field": "epoch"}, {"field": "split"}, {"field": "value"}],
    }
    if revisions:
        encoding["strokeDash"] = {"field": "rev", "type": "nominal", "title": "revision"}
        encoding["tooltip"].insert(0, {"field": "rev"})
    return {
        **_base(values, title),
        "facet": {
            "column": {
                "field": "metric",
                "type": "nominal",
                "title": None,
                "sort": ["loss", "accuracy"],
                "header": {"labelFontSize": 13},
            }
        },
        "spec": {"width": 260, "height": 200, "mark": {"type": "line", "point": True}, "encoding": encoding},
        "resolve": {"scale": {"y": "independent"}},
    }


def thresholds(values, best: float | None = None) -> dict:
    """Validation accuracy at each threshold (records {threshold, accuracy}), the best one marked."""
    layers: list[dict] = [
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "threshold", "type": "quantitative", "scale": {"domain": [0, 1]}},
                "y": {
                    "field": "accuracy",
                    "type": "quantitative",
                    "title": "validation accuracy",
                    "scale": {"zero": False},
                },
                "tooltip": [{"field": "threshold"}, {"field": "accuracy"}],
            },
        }
    ]
    if best is not None:
        layers.append(
            {
                "mark": {"type": "rule", "strokeDash": [4, 4], "color": "gray"},
                "encoding": {"x": {"datum": best, "type": "quantitative"}},
            }
        )
    return {**_base(values), "width": WIDTH, "height": 220, "layer": layers}


def roc(values) -> dict:
    """The ROC curve (records {fpr, tpr}) over the chance diagonal."""
    return {
        **_base(values),
        "width": WIDTH,
        "height": WIDTH,
        "layer": [
            {
                "data": {"values": [{"fpr": 0, "tpr": 0}, {"fpr": 1, "tpr": 1}]},
                "mark": {"type": "line", "strokeDash": [4, 4], "color": "gray"},
                "encoding": {
                    "x": {"field": "fpr", "type": "quantitative"},
                    "y": {"field": "tpr", "type": "quantitative"},
                },
            },
            {
                "mark": {"type": "line"},
                "encoding": {
                    "x": {
                        "field": "fpr",
                        "type": "quantitative",
                        "title": "false positive rate",
                        "scale": {"domain": [0, 1]},
                    },
                    "y": {
                        "field": "tpr",
                        "type": "quantitative",
                        "title": "true positive rate",
                        "scale": {"domain": [0, 1]},
                    },
                    "order": {"field": "order", "type": "quantitative"},
                },
                "transform": [{"window": [{"op": "row_number", "as": "order"}]}],
            },
        ],
    }


def confusion_counts(records: list[dict], classes: list[str]) -> list[dict]:
    """Per-image records {actual, predicted} as one count per cell, every cell present (zeros too)."""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        key = (record["actual"], record["predicted"])
        counts[key] = counts.get(key, 0) + 1
    return [{"actual": a, "predicted": p, "count": counts.get((a, p), 0)} for a in classes for p in classes]


def confusion(cells: list[dict], classes: list[str]) -> dict:
    """The confusion matrix (records {actual, predicted, count}) with every count written in its cell."""
    top = max((cell["count"] for cell in cells), default=0)
    side = max(160, min(480, 48 * len(classes)))
    axis = {"type": "nominal", "sort": classes}
    return {
        **_base(cells),
        "width": side,
        "height": side,
        "encoding": {
            "x": {"field": "predicted", **axis, "axis": {"labelAngle": -45 if len(classes) > 4 else 0}},
            "y": {"field": "actual", **axis},
        },
        "layer": [
            {
                "mark": "rect",
                "encoding": {
                    "color": {
                        "field": "count",
                        "type": "quantitative",
                        "title": "images",
                        "scale": {"scheme": "blues", "domainMin": 0},
                    }
                },
            },
            {
                "mark": {"type": "text", "fontSize": 12 if len(classes) <= 10 else 9},
                "encoding": {
                    "text": {"field": "count", "type": "quantitative", "format": ","},
                    "color": {"condition": {"test": f"datum.count > {top / 2}", "value": "white"}, "value": "black"},
                },
            },
        ],
    }


def shapes(values) -> dict:
    """The survey's shape histogram (records {shape, count}), most common first."""
    return {
        **_base(values),
        "width": 420,
        "mark": "bar",
        "encoding": {
            "y": {"field": "shape", "type": "nominal", "sort": None, "title": "height x width"},
            "x": {"field": "count", "type": "quantitative", "title": "images"},
            "tooltip": [{"field": "shape"}, {"field": "count", "format": ","}],
        },
    }


_ID = re.compile(r'\bid="([^"]+)"')


def to_svg(spec: dict, prefix: str) -> str:
    """The chart as an SVG element. Vega names its definitions (clip1, gradient_0) from counters that
    run on across charts, so they are renamed `<prefix>-1`, `<prefix>-2`, ... in order of
    appearance: the same chart gets the same bytes, and charts inline in one page share no id."""
    import vl_convert

    svg = vl_convert.vegalite_to_svg(spec)
    for number, name in enumerate(dict.fromkeys(_ID.findall(svg)), 1):
        new = f"{prefix}-{number}"
        svg = (
            svg.replace(f'id="{name}"', f'id="{new}"')
            .replace(f"url(#{name})", f"url(#{new})")
            .replace(f'href="#{name}"', f'href="#{new}"')
        )
    return svg


def dvc_templates() -> dict[str, dict]:
    """The DVC plot templates this project declares in dvc.yaml (name -> Vega-Lite with DVC's anchors)."""
    from dvc_render.vega_templates import ConfusionTemplate

    counted = copy.deepcopy(ConfusionTemplate.DEFAULT_CONTENT)
    for param in counted["params"]:
        if param["name"] == "showValues":  # DVC's own template hides the counts behind this box
            param["value"] = True
    return {CURVES_TEMPLATE: curves(DVC_DATA, DVC_TITLE, revisions=True), CONFUSION_TEMPLATE: counted}


def write_dvc_templates(folder: Path = TEMPLATES_DIR) -> list[Path]:
    """Write `dvc_templates()` as `<folder>/<name>.json` (committed; a test keeps them in step)."""
    paths = []
    for name, spec in dvc_templates().items():
        write_text(folder / f"{name}.json", json.dumps(spec, indent=2) + "\n")
        paths.append(folder / f"{name}.json")
    return paths


if __name__ == "__main__":
    for path in write_dvc_templates():
        print(path)
