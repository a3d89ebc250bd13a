"""The DVC pipeline itself: dvc repro, nothing rerun the second time, honest dependencies, metrics,
experiments."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.report.compare import flatten
from pipeline.train.settings import TrainSettings
from tests.conftest import ROOT, make_dvc_project

# Loaded by every Python process started with it on PYTHONPATH: a process that DVC runs for a stage
# (DVC sets DVC_STAGE) records, at exit, every module of this project it imported.
RECORD_IMPORTS = """
import atexit, json, os, sys

def _record():
    stage = os.environ.get("DVC_STAGE")
    if stage:
        files = sorted({m.__file__ for name, m in list(sys.modules.items()) if name.split(".")[0] == "pipeline" and getattr(m, "__file__", None)})
        with open(os.environ["PIPELINE_IMPORT_LOG"], "a") as log:
            log.write(json.dumps({"stage": stage, "files": files}) + "\\n")

atexit.register(_record)
"""


def dvc(project, *args, check=True, env=None):
    proc = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """A tiny project after one `dvc repro`, and for each stage the project files its command imported."""
    project = make_dvc_project(tmp_path_factory.mktemp("dvc"))
    hook = tmp_path_factory.mktemp("hook")
    (hook / "sitecustomize.py").write_text(RECORD_IMPORTS)
    log = hook / "imports.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "PIPELINE_IMPORT_LOG": str(log),
    }
    dvc(project, "repro", env=env)
    imports: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        imports.setdefault(record["stage"], set()).update(
            Path(f).resolve().relative_to(ROOT).as_posix() for f in record["files"]
        )
    return project, imports


def declared_deps() -> dict[str, list[str]]:
    """Each stage's declared dependencies (foreach stages: their `do`)."""
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (stage.get("do", stage)).get("deps", []) for name, stage in stages.items()}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_imported_module_is_a_declared_dependency(reproduced):
    _, imports = reproduced
    deps = declared_deps()
    assert {stage.split("@")[0] for stage in imports} == set(deps)  # every stage ran and was recorded
    missing = {
        stage: sorted(f for f in files if not covered(f, deps[stage.split("@")[0]])) for stage, files in imports.items()
    }
    assert not {stage: files for stage, files in missing.items() if files}, (
        "imported by the stage but not in its dvc.yaml deps"
    )


def test_touching_an_imported_module_marks_its_stages_changed(reproduced, monkeypatch):
    """What DVC itself concludes: after appending a comment to any module a stage imports, `dvc
    status` names that stage; after restoring it, nothing."""
    from dvc.repo import Repo

    project, imports = reproduced
    monkeypatch.chdir(project)  # DVC names stages relative to the working directory
    importers: dict[str, set[str]] = {}
    for stage, files in imports.items():
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


def test_repro_then_up_to_date_then_experiment(reproduced):
    project, _ = reproduced
    metrics = {arch: (project / f"metrics/{arch}.json").read_bytes() for arch in ("mlp", "cnn")}
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

    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny run"], cwd=project, check=True
    )
    # Every stage again: every output git keeps, and dvc.lock's hashes of what DVC keeps, are the same
    # bytes (no TensorBoard file names, zip times or run times among them), so git sees no change.
    forced = dvc(project, "repro", "--force")
    assert forced.stdout.count("Running stage") == 10
    assert (
        subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True).stdout
        == ""
    )
    assert (project / "runs/cnn/run.json").exists() and list(
        (project / "runs/cnn/tensorboard").iterdir()
    )  # beside, ignored
    dvc(project, "exp", "run", "-S", "train.epochs=2")
    assert json.loads((project / "metrics/cnn.json").read_text())["epochs"] == 2
    assert (project / "metrics/mlp.json").read_bytes() != metrics["mlp"]

    # DVC refuses a new key unless it is forced with `+`; the stage itself must then refuse it.
    typo = dvc(project, "exp", "run", "-S", "+train.epocs=2", check=False)
    assert typo.returncode != 0
    assert "train.epocs: unknown key" in typo.stdout + typo.stderr
    git(
        project, "checkout", "--", "params.yaml"
    )  # the failed run leaves the typo in the workspace; the next tests share it


def git(project, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    )


def test_share_through_a_remote_then_a_fresh_clone_reruns_nothing(reproduced, tmp_path):
    """`dvc push` to a local-directory remote, a fresh clone, `dvc pull`: the pipeline is up to date
    there. Experiments travel through a git remote (a local bare repository) with `dvc exp push/pull`."""
    project, _ = reproduced
    dvc(project, "repro")  # the workspace as params.yaml says (earlier tests ran experiments in it)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    dvc(project, "remote", "add", "-d", "store", str(tmp_path / "store"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "shared run", "--allow-empty")
    git(project, "remote", "add", "origin", str(origin))
    git(project, "push", "-q", "origin", "HEAD:main")
    dvc(project, "push")
    dvc(project, "exp", "run", "-n", "shared-exp", "-S", "evaluate.thresholds=20")
    dvc(project, "exp", "push", "origin", "shared-exp")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "-b", "main", str(origin), str(clone))
    dvc(clone, "pull")
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    assert "Running stage" not in dvc(clone, "repro").stdout
    assert (clone / "models/cnn/model.keras").read_bytes() == (project / "models/cnn/model.keras").read_bytes()
    dvc(clone, "exp", "pull", "origin", "shared-exp")
    assert "shared-exp" in dvc(clone, "exp", "list", "--name-only").stdout

    board = json.loads(
        subprocess.run(
            ["pipeline", "leaderboard", "--json"], cwd=project, capture_output=True, text=True, check=True
        ).stdout
    )
    assert {(row["experiment"], row["arch"]) for row in board} >= {("shared-exp", "cnn"), ("shared-exp", "mlp")}
    assert {row["evaluate.thresholds"] for row in board if row["experiment"] == "shared-exp"} == {
        20
    }  # the param that differs


def test_a_queued_grid_runs_and_the_leaderboard_ranks_it(reproduced):
    """DVC's own sweep syntax queues one experiment per combination (a list-valued param sweeps as
    `[a,b],[c,d]`); `dvc queue start` runs them; the leaderboard lists each with its params."""
    project, _ = reproduced
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline for the grid", "--allow-empty")
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
    dvc(project, "queue", "start", "-j", "1")
    deadline = time.monotonic() + 600
    while (
        any(word in dvc(project, "queue", "status").stdout for word in ("Queued", "Running"))
        and time.monotonic() < deadline
    ):
        time.sleep(3)
    status = dvc(project, "queue", "status").stdout
    assert all(f"{name}" in status for name in names) and "Failed" not in status, status
    assert f"Reproducing experiment '{names[0]}'" in dvc(project, "queue", "logs", names[0]).stdout

    board = json.loads(
        subprocess.run(
            ["pipeline", "leaderboard", "--json", "--sort", "best_threshold_accuracy"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
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
