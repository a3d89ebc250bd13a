"""`pipeline metrics diff` between git revisions and DVC experiments, checked against the files
themselves and against `dvc metrics diff`; and the DVC pipeline's plots."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from pipeline.report.metrics_diff import Change
from tests import dvc_projects
from tests.conftest import run_cli
from tests.dvc_projects import git


def dvc(project, *args):
    proc = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def diff_json(project, *revs):
    return json.loads(run_cli("metrics", "diff", *revs, "--json", cwd=project).stdout)


def by_key(result):
    return {(c["arch"], c["metric"]): c for c in result["changes"]}


def test_change_delta_percentage_and_verdict():
    c = Change("cnn", "accuracy", 0.8, 0.9)
    assert (c.delta, c.pct, c.verdict) == (0.1, 12.5, "better")  # 0.9 - 0.8 without float noise
    assert Change("cnn", "mse", 0.2, 0.3).verdict == "worse"  # lower is better
    assert Change("cnn", "per_class_accuracy.cat", 0.5, 0.25).pct == -50.0
    assert Change("cnn", "epochs", 8, 10).verdict == ""  # neither better nor worse
    assert Change("cnn", "pearson", 0.0, 0.5).pct is None  # no percentage of zero
    missing = Change("lenet5", "accuracy", None, 0.7)
    assert (missing.delta, missing.pct, missing.verdict) == (None, None, "")


@pytest.fixture(scope="module")
def metrics_repo_once(tmp_path_factory):
    """A git + DVC repo whose dvc.yaml declares metrics files, with two commits written by hand."""
    root = tmp_path_factory.mktemp("metrics-repo")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, check=True)
    (root / "dvc.yaml").write_text("metrics:\n  - metrics/mlp.json\n  - metrics/cnn.json\n  - metrics/lenet5.json\n")
    (root / "metrics").mkdir()

    def commit(files, message):
        for name, data in files.items():
            path = root / "metrics" / name
            path.unlink(missing_ok=True) if data is None else path.write_text(json.dumps(data))
        git(root, "add", "-A")
        git(root, "commit", "-qm", message)

    commit(
        {
            "mlp.json": {"mse": 0.25, "accuracy": 0.5, "params": 1000, "per_class_accuracy": {"a": 0.4, "b": 0.6}},
            "cnn.json": {"mse": 0.1, "accuracy": 0.9, "pearson": 0.8},
        },
        "one",
    )
    commit(
        {
            "mlp.json": {
                "mse": 0.2,
                "accuracy": 0.625,
                "params": 1500,
                "per_class_accuracy": {"a": 0.5, "b": 0.6},
                "roc_auc": 0.7,
            },
            "cnn.json": None,
            "lenet5.json": {"accuracy": 0.95},
        },
        "two",
    )
    return root


@pytest.fixture
def metrics_repo(metrics_repo_once, tmp_path):
    """This test's copy of it (`git init` and `dvc init` once a module, not once a test)."""
    return shutil.copytree(metrics_repo_once, tmp_path / "repo", symlinks=True)


def test_diff_between_commits_with_missing_archs_and_metrics(metrics_repo):
    result = diff_json(metrics_repo, "HEAD~1", "HEAD")
    assert (result["old"], result["new"]) == ("HEAD~1", "HEAD")
    changes = by_key(result)
    assert changes[("mlp", "mse")] == {
        "arch": "mlp",
        "metric": "mse",
        "old": 0.25,
        "new": 0.2,
        "delta": -0.05,
        "pct": -20.0,
    }
    assert changes[("mlp", "accuracy")]["delta"] == 0.125 and changes[("mlp", "accuracy")]["pct"] == 25.0
    assert changes[("mlp", "params")]["delta"] == 500
    assert changes[("mlp", "per_class_accuracy.a")]["delta"] == pytest.approx(0.1)
    assert ("mlp", "per_class_accuracy.b") not in changes  # unchanged: listed only with --all
    assert changes[("mlp", "roc_auc")] == {
        "arch": "mlp",
        "metric": "roc_auc",
        "old": None,
        "new": 0.7,
        "delta": None,
        "pct": None,
    }
    assert changes[("cnn", "accuracy")]["new"] is None and changes[("cnn", "accuracy")]["old"] == 0.9  # arch gone
    assert changes[("lenet5", "accuracy")]["old"] is None  # arch new
    assert [c["arch"] for c in result["changes"]] == sorted(c["arch"] for c in result["changes"])

    # DVC's own diff of the same files agrees on every delta.
    theirs = json.loads(dvc(metrics_repo, "metrics", "diff", "HEAD~1", "HEAD", "--json"))
    for path, metrics in theirs.items():
        arch = path.split("/")[-1].removesuffix(".json")
        for metric, values in metrics.items():
            if values.get("diff") is not None:
                assert changes[(arch, metric)]["delta"] == pytest.approx(values["diff"])

    every = by_key(diff_json(metrics_repo, "HEAD~1", "HEAD", "--all"))
    assert every[("mlp", "per_class_accuracy.b")]["delta"] == 0

    md = run_cli("metrics", "diff", "HEAD~1", "HEAD", "--md", cwd=metrics_repo).stdout
    assert md.startswith("| arch | metric | HEAD~1 | HEAD | delta | change |")
    assert "| mlp | accuracy | 0.5 | 0.625 | +0.125 (better) | +25% |" in md
    assert "| mlp | mse | 0.25 | 0.2 | -0.05 (better) | -20% |" in md
    assert "| cnn | accuracy | 0.9 | - | - | - |" in md
    table = run_cli("metrics", "diff", "HEAD~1", "HEAD", cwd=metrics_repo).stdout
    # piped, so no colour: the verdict in words
    assert re.search(r"mlp\s*│\s*accuracy\s*│\s*0\.5\s*│\s*0\.625\s*│\s*\+0\.125 \(better\)\s*│\s*\+25%", table), table
    assert re.search(r"mlp\s*│\s*mse\s*│\s*0\.25\s*│\s*0\.2\s*│\s*-0\.05 \(better\)", table), table


def test_diff_defaults_to_head_against_the_workspace(metrics_repo):
    assert "No metric changed between HEAD and workspace" in run_cli("metrics", "diff", cwd=metrics_repo).stdout
    (metrics_repo / "metrics/lenet5.json").write_text(json.dumps({"accuracy": 0.9}))
    result = diff_json(metrics_repo)
    assert (result["old"], result["new"]) == ("HEAD", "workspace")
    assert [(c["arch"], c["metric"], c["delta"]) for c in result["changes"]] == [("lenet5", "accuracy", -0.05)]


@pytest.mark.parametrize(
    "args, expected",
    [
        (("metrics", "diff", "nosuchrev"), "unknown Git revision 'nosuchrev'"),
        (("metrics", "diff", "HEAD~1", "HEAD", "--md", "--json"), "--md and --json: choose one"),
    ],
)
def test_diff_user_errors_are_one_line(metrics_repo, args, expected):
    proc = run_cli(*args, cwd=metrics_repo, check=False)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_diff_against_a_dvc_experiment(metrics_repo):
    """An experiment name from `dvc exp run -n` is a revision too (a one-line stage stands in for training)."""
    (metrics_repo / "params.yaml").write_text("scale: 1\n")
    (metrics_repo / "score.py").write_text(
        "import json\n"
        "scale = int(open('params.yaml').read().split(':')[1])\n"
        "json.dump({'accuracy': 0.95, 'params': 100 * scale}, open('metrics/lenet5.json', 'w'))\n"
    )
    (metrics_repo / "dvc.yaml").write_text(
        f"stages:\n  score:\n    cmd: {sys.executable} score.py\n    deps: [score.py]\n    params: [scale]\n"
        "    metrics:\n      - metrics/lenet5.json:\n          cache: false\n"
    )
    (metrics_repo / "metrics/lenet5.json").unlink()
    dvc(metrics_repo, "repro")
    git(metrics_repo, "add", "-A")
    git(metrics_repo, "commit", "-qm", "stage")
    dvc(metrics_repo, "exp", "run", "-n", "triple", "-S", "scale=3")
    result = diff_json(metrics_repo, "HEAD", "triple")
    assert result["new"] == "triple"
    assert [(c["arch"], c["metric"], c["old"], c["new"], c["delta"], c["pct"]) for c in result["changes"]] == [
        ("lenet5", "params", 100, 300, 200, 200.0)
    ]


def test_diff_outside_a_dvc_project(tmp_path):
    proc = run_cli("metrics", "diff", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "not inside a DVC project" in proc.stderr


@pytest.fixture(scope="session")
def two_epochs(request, tmp_path_factory):
    """The tiny DVC project reproduced and committed, then `dvc exp run -S train.epochs=2` committed on
    top (tests/dvc_projects.py: built once a session, shared with tests/test_dvc.py; read only)."""
    return dvc_projects.two_epochs(request.config, tmp_path_factory)


@pytest.mark.slow
def test_pipeline_plots_and_diff_between_two_commits(two_epochs, tmp_path):
    """The tiny pipeline twice with different params: every declared plot renders, and the diff of the
    two commits has the deltas of the files themselves, as `dvc metrics diff` does."""
    project = two_epochs
    assert (project / "reports/summary.md").read_text().startswith("# Summary")

    dvc(project, "plots", "show", "-o", str(tmp_path / "html"))
    html = (tmp_path / "html/index.html").read_text()
    declared = json.loads(dvc(project, "plots", "show", "--json"))["data"]
    assert len(declared) == 13  # per arch: curves, thresholds, ROC, confusion, predictions; the shapes; the audit's 2
    for plot_id in declared:
        assert re.sub(r"[^a-zA-Z0-9]", "_", plot_id) in html, plot_id
    for arch in ("mlp", "cnn"):
        for name in ("curves.json", "thresholds.json", "roc.json", "confusion.json", "predictions.png"):
            assert f"plots/{arch}/{name}" in declared
        assert (tmp_path / f"html/static/workspace_plots_{arch}_predictions.png").stat().st_size > 10_000
    assert {"plots/shapes.json", "plots/audit/duplicates.png", "plots/audit/label_issues.png"} <= set(declared)
    assert not any(plot_id.startswith("dvclive/") for plot_id in declared)  # the curves are drawn once, overlaid:
    curves = declared["plots/cnn/curves.json"][0]["content"]
    assert curves["facet"]["column"]["field"] == "metric" and curves["spec"]["encoding"]["color"]["field"] == "split"
    assert {(r["metric"], r["split"]) for r in curves["data"]["values"]} == {
        (m, s) for m in ("loss", "accuracy") for s in ("train", "validation")
    }
    confusion = declared["plots/cnn/confusion.json"][0]["content"]
    assert {param["name"]: param.get("value") for param in confusion["params"]}["showValues"] is True  # counts shown

    # HEAD~1 is the run with `epochs: 1`, HEAD the one with `epochs: 2` (and nothing else changed).
    assert git(project, "log", "--format=%s").split("\n")[:2] == ["two epochs", "one epoch"]
    assert git(project, "diff", "HEAD~1", "HEAD", "--", "params.yaml").count("epochs:") == 2
    result = by_key(diff_json(project, "HEAD~1", "HEAD"))
    theirs = json.loads(dvc(project, "metrics", "diff", "HEAD~1", "HEAD", "--json"))
    for arch in ("mlp", "cnn"):
        old = json.loads(git(project, "show", f"HEAD~1:metrics/{arch}.json"))
        new = json.loads((project / f"metrics/{arch}.json").read_text())
        assert result[(arch, "epochs")]["delta"] == 1
        changed = {m for m in old if old[m] != new[m]}
        assert changed >= {"epochs", "mse"}
        assert {m for (a, m) in result if a == arch and not m.startswith("dvclive.")} == changed
        assert result[(arch, "dvclive.step")]["delta"] == 1  # dvclive's summary of training, under the same arch
        for metric in changed:
            assert result[(arch, metric)]["delta"] == pytest.approx(new[metric] - old[metric], abs=1e-9)
            assert theirs[f"metrics/{arch}.json"][metric]["diff"] == pytest.approx(result[(arch, metric)]["delta"])
