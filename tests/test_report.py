"""reports/summary.html: self-contained, byte-identical for the same inputs, and every plot dvc.yaml
declares drawn by a real browser with the network off."""

import json
import re
import shutil
import subprocess

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT, run_cli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Appended to a copy of the page in the test only (the page itself has no script): after the page
# has loaded, the browser reports which figures it drew: an SVG with a non-empty box and marks in
# it, or an image that decoded.
MEASURE = """<script>
window.addEventListener("load", () => {
  const drawn = [];
  for (const figure of document.querySelectorAll("figure.plot")) {
    const svg = figure.querySelector("svg"), img = figure.querySelector("img");
    let ok = false;
    if (svg) {
      const box = svg.getBBox();
      ok = box.width > 0 && box.height > 0 && svg.querySelectorAll("path, rect, line").length > 3;
    }
    if (img) ok = img.complete && img.naturalWidth > 0 && img.naturalHeight > 0;
    if (ok) drawn.push(figure.dataset.plot);
  }
  document.body.setAttribute("data-drawn", JSON.stringify(drawn));
});
</script>
"""


def declared_plots(archs: list[str]) -> list[str]:
    """The plot files dvc.yaml declares under plots/ (foreach stages for each of `archs`), relative to plots/."""
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    found = []
    for stage in stages.values():
        body = stage.get("do", stage)
        names = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in body.get("plots", [])]
        for name in names:
            for arch in archs if "${item}" in name else [None]:
                path = name.replace("${item}", arch) if arch else name
                if path.startswith("plots/"):
                    found.append(path.removeprefix("plots/"))
    return sorted(found)


@pytest.fixture(scope="module")
def report(evaluated_project, tmp_path_factory):
    """`pipeline audit` and `pipeline report` (as dvc.yaml runs them) on a copy of the tiny evaluated pipeline."""
    project = tmp_path_factory.mktemp("report")
    for name in ("metrics", "plots", "reports", "params.yaml"):
        (shutil.copytree if (evaluated_project / name).is_dir() else shutil.copy)(
            evaluated_project / name, project / name
        )
    run_cli(
        "audit",
        *(
            "--in",
            str(evaluated_project / "data/raw/synthetic"),
            "--prepared",
            str(evaluated_project / "data/prepared"),
        ),
        *("--model", str(evaluated_project / "models/cnn/model.keras")),
        *("--out", "reports/audit.json", "--plots", "plots/audit"),
        cwd=project,
    )
    proc = run_cli("report", "--audit", "reports/audit.json", cwd=project)
    return project, proc


def test_the_page_declares_a_drawn_figure_for_every_plot_and_needs_nothing_else(report):
    project, proc = report
    page = (project / "reports/summary.html").read_text()
    expected = declared_plots(["mlp", "cnn"])
    assert len(expected) == 13  # per arch: curves, thresholds, ROC, confusion, predictions; the shapes; the audit's 2
    figures = dict(
        re.findall(r'<figure class="plot" data-plot="([^"]+)"><figcaption>[^<]*</figcaption>(<svg|<img)', page)
    )
    assert sorted(figures) == expected
    assert all(kind == ("<img" if name.endswith(".png") else "<svg") for name, kind in figures.items())
    assert f"{len(expected)} plots drawn" in proc.stdout
    # Self-contained: no script, no stylesheet or image from anywhere but the page itself.
    assert "<script" not in page and "<link" not in page
    assert all(url.startswith(("data:", "#")) for url in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert "@import" not in page and "url(http" not in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # the inline charts share no definition


def test_the_page_is_byte_identical_for_the_same_inputs(report):
    project, _ = report
    first = (project / "reports/summary.html").read_bytes()
    run_cli("report", "--audit", "reports/audit.json", "--html", "again.html", cwd=project)
    assert (project / "again.html").read_bytes() == first


def test_every_declared_plot_draws_in_a_browser_offline(report, tmp_path):
    """Headless Chromium with the network off (a proxy that does not exist, every host unresolvable)."""
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        pytest.skip(
            f"no browser binary ({', '.join(BROWSERS)}) on PATH; .ci/run installs Chromium so CI runs this test"
        )
    project, _ = report
    page = tmp_path / "page.html"
    page.write_text((project / "reports/summary.html").read_text().replace("</body>", MEASURE + "</body>"))
    args = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-drawn="([^"]*)"', proc.stdout)
    assert found, f"the browser returned no page:\n{proc.stderr[-2000:]}"
    drawn = json.loads(found[1].replace("&quot;", '"'))
    assert sorted(drawn) == declared_plots(["mlp", "cnn"])
