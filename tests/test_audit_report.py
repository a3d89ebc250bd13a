"""The audit on paper: its contact sheets (same bytes for the same input, a PNG even when empty) and its
section of reports/summary.md and reports/summary.html."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from pipeline.audit.sheets import DUPLICATES, LABEL_ISSUES, write_groups_png, write_issues_png
from pipeline.core.errors import InputError
from pipeline.report.report import write_report
from tests.test_compare import mixed  # noqa: F401 (a fixture: three models' metrics)

SURVEY = {"images": 2000, "unreadable": 0, "most_common_shape": [32, 32],
          "shapes": [{"height": 32, "width": 32, "count": 2000}]}  # fmt: skip
ODD = "cat/<b>&'odd\".jpg"  # a path the page must escape


def thumbnails(count: int, seed: int = 0) -> list[np.ndarray]:
    """Random images of varied shapes: RGB, every fourth one gray."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16 + 8 * (i % 3), 24, 3)[: 2 + (i % 4 < 3)], dtype=np.uint8) for i in range(count)]


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image.size


def member(path: str, cls: str, split: str, distance: int) -> dict:
    return {"path": path, "class": cls, "split": split, "distance": distance}


def audit_report(groups: list[dict], issues: list[dict], computed: bool = True) -> dict:
    """An audit.json in the audit stage's schema, its summary counted from `groups` and `issues`."""
    return {
        "dataset": {
            "root": "data/raw/synthetic",
            "source": "synthetic",
            "layout": "folder",
            "items": 2000,
            "prepared": "data/prepared" if computed else None,
            "model": "models/cnn/model.keras" if computed else None,
        },  # fmt: skip
        "hash": {"method": "dhash", "bits": 64, "near_distance": 8},
        "summary": {
            "duplicate_groups": len(groups),
            "exact_groups": sum(g["kind"] == "exact" for g in groups),
            "near_groups": sum(g["kind"] == "near" for g in groups),
            "cross_class_groups": sum(g["cross_class"] for g in groups),
            "leakage_groups": sum(g["leakage"] for g in groups),
            "items_in_groups": sum(len(g["members"]) for g in groups),
            "label_issues": len(issues),
            "unreadable": 0,
        },
        "balance": [
            {
                "class": "cat",
                "items": 1000,
                "share": 0.5,
                "statuses": {"success": 1000, "failed_to_download": 3, "skipped": 1, "duplicate": 2},
                "reasons": {"timeout": 2, "HTTP 404": 1, "too small": 1},
            },
            {"class": "dog", "items": 1000, "share": 0.5, "statuses": {"success": 1000}, "reasons": {}},
        ],  # fmt: skip
        "duplicate_groups": groups,
        "label_issues": issues,
        "label_issues_computed": computed,
        "unreadable": [],
    }


GROUPS = [
    {"kind": "exact", "cross_class": True, "leakage": False, "max_distance": 0,
     "members": [member(ODD, "cat", "train", 0), member("dog/ab12.jpg", "dog", "train", 0)]},
    {"kind": "near", "cross_class": False, "leakage": True, "max_distance": 3,
     "members": [member("shards/00000.tar#0000000012.jpg", "dog", "train", 0),
                 member("dog/cd34.jpg", "dog", "val", 3)]},
    {"kind": "near", "cross_class": False, "leakage": False, "max_distance": 5,
     "members": [member("cat/ef56.jpg", "cat", "train", 0), member("cat/gh78.jpg", "cat", "train", 5),
                 member("cat/ij90.jpg", "cat", "train", 2)]},
]  # fmt: skip
ISSUES = [
    {"path": "cat/zz01.jpg", "given": "cat", "suggested": "dog", "score": 0.031},
    {"path": "dog/<zz02>.jpg", "given": "dog", "suggested": "cat", "score": 0.2},
]


def report_on(root, audit: dict | None):
    """write_report on three models' metrics (no plots of theirs), with the audit and its sheets."""
    (root / "survey.json").write_text(json.dumps(SURVEY))
    audit_json = None
    if audit is not None:
        audit_json = root / "reports/audit.json"
        audit_json.parent.mkdir(exist_ok=True)
        audit_json.write_text(json.dumps(audit))
        sheets = root / "plots/audit"
        groups = [
            list(zip(thumbnails(len(g["members"])), [m["class"] for m in g["members"]]))
            for g in audit["duplicate_groups"]
        ]
        write_groups_png(groups, sheets / DUPLICATES, "Duplicate groups")
        issues = audit["label_issues"]
        write_issues_png(list(zip(thumbnails(len(issues)), [i["given"] for i in issues])), sheets / LABEL_ISSUES, "")
    report = write_report(
        root / "metrics", root / "survey.json", root / "plots", root / "reports/summary.md", "accuracy",
        audit_json=audit_json,
    )  # fmt: skip
    return report, report.summary.read_text(), report.html.read_text()


def test_sheets_are_the_same_bytes_for_the_same_input_and_pngs_even_when_empty(tmp_path):
    groups = [list(zip(thumbnails(n, seed=n), [f"cat / train / d={i}" for i in range(n)])) for n in (2, 11, 3)]
    issues = list(zip(thumbnails(6), ["given cat → suggested dog, score 0.031"] * 6))
    written = {}
    for attempt in ("a", "b"):
        write_groups_png(groups, tmp_path / attempt / "groups.png", "Duplicate groups")
        write_issues_png(issues, tmp_path / attempt / "issues.png", "Label issues")
        write_groups_png([], tmp_path / attempt / "no_groups.png", "Duplicate groups")
        write_issues_png([], tmp_path / attempt / "no_issues.png", "Label issues", "Label issues not computed")
        written[attempt] = {path.name: path.read_bytes() for path in sorted((tmp_path / attempt).iterdir())}
    assert written["a"] == written["b"]
    assert sorted(written["a"]) == ["groups.png", "issues.png", "no_groups.png", "no_issues.png"]  # no temporaries
    sizes = {name: png_size(data) for name, data in written["a"].items()}
    assert sizes["groups.png"][0] > sizes["issues.png"][0]  # 8 thumbnails and "+3 more" in a row, against 4
    assert sizes["groups.png"][1] > sizes["no_groups.png"][1] and sizes["issues.png"][1] > sizes["no_issues.png"][1]
    assert written["a"]["no_groups.png"] != written["a"]["no_issues.png"]
    write_groups_png(groups[:2], tmp_path / "fewer.png", "Duplicate groups")
    assert png_size((tmp_path / "fewer.png").read_bytes())[1] < sizes["groups.png"][1]  # one row per group


def test_the_audit_section_shows_each_kind_of_group_escaped(mixed):  # noqa: F811
    report, markdown, page = report_on(mixed, audit_report(GROUPS, ISSUES))
    verdict = "3 duplicate groups (1 across classes, 1 across train/validation), 2 label-issue candidates"
    assert f"## Audit\n\n**{verdict}.**" in markdown
    assert "1 exact and 2 near duplicate groups (dhash, 64 bits, near = within 8 bits), 7 images in groups" in markdown
    assert "[audit.json](audit.json)" in markdown  # beside summary.md
    assert (
        "[duplicates.png](../plots/audit/duplicates.png), [label_issues.png](../plots/audit/label_issues.png)"
        in markdown
    )
    assert markdown.index("## Image shapes") < markdown.index("## Audit") < markdown.index("## Plots")

    section = page[page.index('<h2 id="audit">') : page.index('<h2 id="arch-')]
    assert f"<strong>{verdict}.</strong>" in section
    assert "<code>cat/&lt;b&gt;&amp;&#x27;odd&quot;.jpg</code> (cat, train, distance 0)" in section
    assert "<code>dog/&lt;zz02&gt;.jpg</code>" in section and "<b>" not in section and "<zz02>" not in section
    rows = re.findall(r"<tr><td>#(\d+)</td><td>(\w+)</td><td>([^<]+)</td>", section)
    assert rows == [("1", "exact", "across classes"), ("2", "near", "train/validation"),
                    ("3", "near", "same class, same split")]  # fmt: skip
    assert "<code>dog/cd34.jpg</code> (dog, val, distance 3)" in section
    assert "<th>failed_to_download</th>" in section and "timeout (2), HTTP 404 (1), too small (1)" in section
    assert '<td class="num">50.0%</td>' in section and '<td class="num">0.031</td>' in section
    assert section.index("cat/zz01.jpg") < section.index("dog/&lt;zz02&gt;.jpg")  # best candidate first
    for sheet in ("audit/duplicates.png", "audit/label_issues.png"):
        assert re.search(rf'<figure class="plot" data-plot="{sheet}"><figcaption>[^<]*</figcaption><img', section)
        assert sheet in report.plots
    assert "<script" not in page and page.count('id="audit"') == 1

    first = report.summary.read_bytes(), report.html.read_bytes()
    again, _, _ = report_on(mixed, audit_report(GROUPS, ISSUES))
    assert (again.summary.read_bytes(), again.html.read_bytes()) == first


def test_long_lists_show_their_top_rows(mixed):  # noqa: F811
    groups = [{**GROUPS[2], "members": [member(f"cat/{i:02}.jpg", "cat", "train", 1) for i in range(11)]}] * 12
    issues = [{**ISSUES[0], "path": f"cat/{i:02}.jpg", "score": i / 100} for i in range(25)]
    _, _, page = report_on(mixed, audit_report(groups, issues))
    assert "<td>#10</td>" in page and "<td>#11</td>" not in page
    assert "The first 10 of 12 groups" in page and "The first 20 of 25 candidates" in page
    assert "cat/07.jpg" in page and "+3 more" in page  # the first 8 members of 11
    assert "cat/19.jpg" in page and "cat/20.jpg" not in page.split("<h3>Label issues</h3>")[1]


def test_an_empty_audit_says_nothing_was_found(mixed):  # noqa: F811
    report, markdown, page = report_on(mixed, audit_report([], [], computed=False))
    verdict = "No duplicates or leakage found; label issues not computed"
    assert f"**{verdict}.**" in markdown and f"<strong>{verdict}.</strong>" in page
    assert "label_issues.png" not in markdown and "audit/label_issues.png" not in page
    assert "<p>No duplicate groups.</p>" in page
    assert "label issues need the prepared data and a trained model" in page and "--prepared" in page
    assert "--model" in page and [p for p in report.plots if p.startswith("audit/")] == ["audit/duplicates.png"]
    _, markdown, page = report_on(mixed, audit_report([], []))
    assert "**No duplicates, leakage or label issues found.**" in markdown
    assert "<p>No label-issue candidates.</p>" in page
    folder = {**audit_report([], []), "balance": [{"class": "cat", "items": 3, "share": 1.0}]}  # no manifest
    _, _, page = report_on(mixed, folder)
    assert "<th>class</th><th>items</th><th>share</th></tr>" in page and "failure" not in page


def test_without_an_audit_the_pages_have_no_audit_section(mixed):  # noqa: F811
    _, markdown, page = report_on(mixed, None)
    assert "Audit" not in markdown and 'id="audit"' not in page


def test_a_missing_audit_report_is_an_input_error_naming_it(mixed):  # noqa: F811
    (mixed / "survey.json").write_text(json.dumps(SURVEY))
    missing = mixed / "reports/audit.json"
    with pytest.raises(InputError, match=re.escape(f"file not found: {missing}")):
        write_report(
            mixed / "metrics", mixed / "survey.json", mixed / "plots", mixed / "summary.md", "accuracy",
            audit_json=missing,
        )  # fmt: skip
    assert not (mixed / "summary.md").exists()
