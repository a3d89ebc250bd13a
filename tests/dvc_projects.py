"""The tiny DVC project of tests/conftest.py, reproduced once a session and shared by the slow DVC tests.

`dvc repro` of the tiny project takes about 40 s on 2 cores (four TensorFlow processes), so it runs
once (`reproduced`, which also records what each stage imports) and each test that changes the
project works on a `copy_project` of it: a copy keeps the git history and the DVC cache under
.dvc/cache, and `dvc status` is clean in it (DVC hashes the copied files again; nothing reruns).
`two_epochs` is a copy with two commits, one epoch then `dvc exp run -S train.epochs=2`, which
tests/test_dvc.py (the experiment) and tests/test_metrics_diff.py (the diff of two commits) both read.

Test modules wrap these in fixtures of their own; the projects are memoised on the pytest config,
so a session builds each at most once however many modules ask.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_dvc_project

# Loaded by every Python process started with it on PYTHONPATH: a process that DVC runs for a stage
# (DVC sets DVC_STAGE) records, at exit, every module of this project it imported.
RECORD_IMPORTS = """
import atexit, json, os, sys

def _record():
    stage = os.environ.get("DVC_STAGE")
    if stage:
        modules = [m for name, m in list(sys.modules.items()) if name.split(".")[0] == "pipeline"]
        files = sorted({m.__file__ for m in modules if getattr(m, "__file__", None)})
        with open(os.environ["PIPELINE_IMPORT_LOG"], "a") as log:
            log.write(json.dumps({"stage": stage, "files": files}) + "\\n")

atexit.register(_record)
"""


def dvc(project: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def git(project: Path, *args: str) -> str:
    """`git ARGS` in `project` (a fixed author), its stdout."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-qm", message, "--allow-empty")


def copy_project(src: Path, dst: Path) -> Path:
    """A copy of the project at `src` as `dst` (which may exist, empty): working tree, .git and the
    DVC cache; not .dvc/tmp (locks, the experiments queue and its workers' state belong to `src`)."""

    def ignore_tmp(folder: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(folder) == src / ".dvc" else []

    shutil.copytree(src, dst, symlinks=True, ignore=ignore_tmp, dirs_exist_ok=True)
    return dst


@dataclass(frozen=True)
class Reproduced:
    """The tiny project after one `dvc repro` (never changed: copy it), and for each stage the files
    of this project its command imported (paths relative to the repository root)."""

    root: Path
    imports: dict[str, set[str]]


_BUILT = pytest.StashKey[dict]()


def _once(config: pytest.Config, name: str, build: Callable[[], object]):
    built = config.stash.setdefault(_BUILT, {})
    if name not in built:
        built[name] = build()
    return built[name]


def reproduced(config: pytest.Config, factory: pytest.TempPathFactory) -> Reproduced:
    """The tiny project reproduced once a session, each stage recording what it imports."""

    def build() -> Reproduced:
        project = make_dvc_project(factory.mktemp("reproduced"))
        hook = factory.mktemp("hook")
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
        return Reproduced(project, imports)

    return _once(config, "reproduced", build)


def two_epochs(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    """A copy of `reproduced` with two commits: "one epoch" (the tiny params as reproduced), then
    "two epochs", the workspace after `dvc exp run -S train.epochs=2`. Read it; copy it to change it."""

    def build() -> Path:
        project = copy_project(reproduced(config, factory).root, factory.mktemp("two-epochs"))
        commit_all(project, "one epoch")
        dvc(project, "exp", "run", "-S", "train.epochs=2")
        commit_all(project, "two epochs")
        return project

    return _once(config, "two_epochs", build)


def wait_for_queue(project: Path, names: list[str], timeout: float = 600) -> dict[str, str]:
    """Wait until DVC's experiments queue has finished the experiments `names` (each "Success" or
    "Failed" in what `dvc queue status` reads, polled in this process); their states by name."""
    from dvc.repo import Repo

    deadline = time.monotonic() + timeout
    while True:
        with Repo(str(project)) as repo:
            states = {task["name"]: task["status"] for task in repo.experiments.celery_queue.status()}
        if all(states.get(name) in ("Success", "Failed") for name in names):
            return states
        assert time.monotonic() < deadline, f"the queue did not finish {names} in {timeout} s: {states}"
        time.sleep(0.5)
