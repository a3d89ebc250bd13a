"""The DVC pipeline itself: dvc repro, nothing rerun the second time, honest dependencies, metrics,
experiments.

Every test that runs DVC's pipeline is in the slow tier. The tiny project is reproduced once a
session (tests/dvc_projects.py) and each test that changes it works on a copy."""

import json
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.report.compare import flatten
from pipeline.train.settings import TrainSettings
from tests import dvc_projects
from tests.conftest import ROOT, run_cli
from tests.dvc_projects import Reproduced, commit_all, copy_project, dvc, git


@pytest.fixture(scope="session")
def reproduced(request, tmp_path_factory) -> Reproduced:
    """The tiny project after one `dvc repro`, and for each stage the project files its command imported."""
    return dvc_projects.reproduced(request.config, tmp_path_factory)


@pytest.fixture(scope="session")
def two_epochs(request, tmp_path_factory) -> Path:
    """A copy of it committed, then `dvc exp run -S train.epochs=2` committed on top (read only)."""
    return dvc_projects.two_epochs(request.config, tmp_path_factory)


@pytest.fixture
def project(reproduced, tmp_path) -> Path:
    """A copy of the reproduced project, this test's to change."""
    return copy_project(reproduced.root, tmp_path / "project")


def declared_deps() -> dict[str, list[str]]:
    """Each stage's declared dependencies (foreach stages: their `do`)."""
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (stage.get("do", stage)).get("deps", []) for name, stage in stages.items()}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.slow
def test_every_imported_module_is_a_declared_dependency(reproduced):
    imports = reproduced.imports
    deps = declared_deps()
    assert {stage.split("@")[0] for stage in imports} == set(deps)  # every stage ran and was recorded
    missing = {
        stage: sorted(f for f in files if not covered(f, deps[stage.split("@")[0]])) for stage, files in imports.items()
    }
    assert not {stage: files for stage, files in missing.items() if files}, (
        "imported by the stage but not in its dvc.yaml deps"
    )


@pytest.mark.slow
def test_touching_an_imported_module_marks_its_stages_changed(reproduced, project, monkeypatch):
    """What DVC itself concludes: after appending a comment to any module a stage imports, `dvc
    status` names that stage; after restoring it, nothing."""
    from dvc.repo import Repo

    monkeypatch.chdir(project)  # DVC names stages relative to the working directory
    importers: dict[str, set[str]] = {}
    for stage, files in reproduced.imports.items():
        for file in files:
            importers.setdefault(file, set()).add(stage)
    with Repo(str(project)) as repo:
        assert repo.status() == {}
        for file, stages in sorted(importers.items()):
            path = project / file
            original = path.read_bytes()
            path.write_bytes(original + b"\n# touched\n")
            try:
                changed = set(repo.status())
            finally:
                path.write_bytes(original)
            assert stages <= changed, f"{file}: {sorted(stages - changed)} not reported as changed"
        assert repo.status() == {}


def test_train_stage_params_are_the_training_settings():
    train = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]["params"]
    assert sorted(train) == sorted([f"train.{name}" for name in TrainSettings.model_fields] + ["train.${item}"])


@pytest.mark.slow
def test_repro_then_up_to_date_then_experiment(reproduced, project, two_epochs):
    metrics = {arch: (reproduced.root / f"metrics/{arch}.json").read_bytes() for arch in ("mlp", "cnn")}
    assert (project / "reports/compare.md").read_text().count("|") > 10

    second = dvc(project, "repro")
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout

    shown = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert {"metrics/mlp.json", "metrics/cnn.json"} <= set(files)
    # DVC would show strings (and diff them as "-"): the metrics hold numbers only, the data's identity lies beside them
    for name, content in files.items():
        values = flatten(content["data"]).values()
        assert values and all(isinstance(v, (int, float)) for v in values), name
    assert json.loads((project / "metrics/cnn.dataset.json").read_text())["source"] == "synthetic"

    commit_all(project, "tiny run")
    # Every stage again: every output git keeps, and dvc.lock's hashes of what DVC keeps, are the same
    # bytes (no TensorBoard file names, zip times or run times among them), so git sees no change.
    forced = dvc(project, "repro", "--force")
    # check-params, fetch, survey, prepare, train and evaluate for each of 2 archs, audit, compare, report
    assert forced.stdout.count("Running stage") == 11
    assert git(project, "status", "--porcelain") == ""
    assert (project / "runs/cnn/run.json").exists() and list(
        (project / "runs/cnn/tensorboard").iterdir()
    )  # beside, ignored

    # `dvc exp run -S train.epochs=2` on the committed tiny run (the shared `two_epochs` project ran it)
    assert json.loads((two_epochs / "metrics/cnn.json").read_text())["epochs"] == 2
    assert (two_epochs / "metrics/mlp.json").read_bytes() != metrics["mlp"]

    # DVC refuses a new key unless it is forced with `+`; the stage itself must then refuse it.
    typo = dvc(project, "exp", "run", "-S", "+train.epocs=2", check=False)
    assert typo.returncode != 0
    assert "train.epocs: unknown key" in typo.stdout + typo.stderr


@pytest.mark.slow
def test_share_through_a_remote_then_a_fresh_clone_reruns_nothing(project, tmp_path):
    """`dvc push` to a local-directory remote, a fresh clone, `dvc pull`: the pipeline is up to date
    there. Experiments travel through a git remote (a local bare repository) with `dvc exp push/pull`."""
    assert "Data and pipelines are up to date" in dvc(project, "status").stdout  # the copy as reproduced
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    dvc(project, "remote", "add", "-d", "store", str(tmp_path / "store"))
    commit_all(project, "shared run")
    git(project, "remote", "add", "origin", str(origin))
    git(project, "push", "-q", "origin", "HEAD:main")
    dvc(project, "push")
    # A param only the last two stages read (compare, report): the experiment is a few seconds.
    dvc(project, "exp", "run", "-n", "shared-exp", "-S", "compare.sort=mse")
    dvc(project, "exp", "push", "origin", "shared-exp")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "-b", "main", str(origin), str(clone))
    dvc(clone, "pull")
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    assert "Running stage" not in dvc(clone, "repro").stdout
    assert (clone / "models/cnn/model.keras").read_bytes() == (project / "models/cnn/model.keras").read_bytes()
    dvc(clone, "exp", "pull", "origin", "shared-exp")
    assert "shared-exp" in dvc(clone, "exp", "list", "--name-only").stdout

    board = json.loads(run_cli("leaderboard", "--json", cwd=project).stdout)
    assert {(row["experiment"], row["arch"]) for row in board} >= {("shared-exp", "cnn"), ("shared-exp", "mlp")}
    assert {row["compare.sort"] for row in board if row["experiment"] == "shared-exp"} == {
        "mse"
    }  # the param that differs


@pytest.mark.slow
def test_a_queued_grid_runs_and_the_leaderboard_ranks_it(project, tmp_path):
    """DVC's own sweep syntax queues one experiment per combination (a list-valued param sweeps as
    `[a,b],[c,d]`); `dvc queue start` runs them; the leaderboard lists each with its params."""
    commit_all(project, "baseline for the grid")
    queued = dvc(
        project, "exp", "run", "--queue", "-S", "evaluate.thresholds=10,30", "-S", "compare.sort=mse,accuracy"
    ).stdout
    names = [line.split("'")[1] for line in queued.splitlines() if line.startswith("Queued experiment")]
    assert len(names) == 4
    sweep = dvc(project, "exp", "run", "--queue", "-S", "train.cnn.filters=[4,8],[8,8]").stdout
    assert "train.cnn.filters=[4,8]" in sweep and "train.cnn.filters=[8,8]" in sweep
    dvc(
        project,
        "queue",
        "remove",
        *[line.split("'")[1] for line in sweep.splitlines() if line.startswith("Queued experiment")],
    )
    # Two workers, one a core. A worker stays up (holding any pipe it was given, so not a captured
    # stdout) until the queue has been empty for a while: wait for the experiments, not for it.
    with open(tmp_path / "queue-start.log", "w") as log:
        started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=project, stdout=log, stderr=log)
    assert started.returncode == 0, (tmp_path / "queue-start.log").read_text()
    dvc_projects.wait_for_queue(project, names)
    dvc(project, "queue", "stop")  # the idle workers go now rather than after their timeout
    status = dvc(project, "queue", "status").stdout
    assert all(f"{name}" in status for name in names) and "Failed" not in status, status
    assert f"Reproducing experiment '{names[0]}'" in dvc(project, "queue", "logs", names[0]).stdout

    board = json.loads(run_cli("leaderboard", "--json", "--sort", "best_threshold_accuracy", cwd=project).stdout)
    grid = [row for row in board if row["experiment"] in names]
    assert len(grid) == 8  # 4 experiments x 2 architectures
    assert {(row["evaluate.thresholds"], row["compare.sort"]) for row in grid} == {
        (10, "mse"),
        (10, "accuracy"),
        (30, "mse"),
        (30, "accuracy"),
    }
    scores = [row["best_threshold_accuracy"] for row in board]
    assert scores == sorted(scores, reverse=True)
