"""The README's five seed experiments, run as written, offline.

The `dvc exp run -n seedNNN ...` commands are read from README.md (so the two cannot drift) and run
one after another in one scratch copy of this project (its code, dvc.yaml, params.yaml, .gitignore),
against small stand-ins of the real data served from 127.0.0.1 (tests/seed_standins.py). The test
adds only `-S` overrides that point the sources at the local server (with the stand-ins' SHA-256,
since the published ones cannot match), shorten training to one epoch and size seed 000 to its
stand-in (a smaller split, two of its five architectures); seed 001's
`fall11_urls.txt.gz` is written into the project with local URLs, so its command needs no override.
Each experiment must finish, train the architectures its command names and write finite metrics
that `dvc exp show` reports under its name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.dvc_projects import git
from tests.seed_standins import (
    IMAGENET_WNIDS,
    StandinServer,
    cifar10_tarball,
    imagenet_site,
    mnist_files,
    petimages_zip,
)

SEEDS = [f"seed00{n}" for n in range(5)]
PET_PER_CLASS = 300  # two of them broken on purpose, like the real zip's
SEED000_SPLIT = ["prepare.train_size=400", "prepare.val_size=100"]  # seed 000 asks for 4,096 + 1,024
# 5 x 20 train + 50 val images, every class in each batch: the pre-activation net's convolutions are
# the one training here whose time grows with the images (AlexNet's is fixed by seed 001's 100 + 50
# per class); the other stand-ins' stages are mostly the start of their TensorFlow process.
CIFAR_PER_BATCH, CIFAR_TEST = 20, 50
CATS_DOGS_PATH = "/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"


def readme_seed_commands() -> dict[str, list[str]]:
    """The README's seed commands as argument lists, by experiment name (line continuations joined,
    comments dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Seed experiments\n", 1)[1].split("\n## ", 1)[0]
    commands = {}
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:4] == ["dvc", "exp", "run", "-n"] and argv[4].startswith("seed"):
                commands[argv[4]] = argv
    return commands


def overrides(argv: list[str]) -> dict[str, str]:
    """`-S key=value` of a command, by key (without a leading `+`), the last one winning as in DVC."""
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-S"]
    return {key.lstrip("+~"): value for key, _, value in (pair.partition("=") for pair in pairs)}


def listed(value: str) -> list[str]:
    """`[a,b]` -> ["a", "b"]."""
    return [item.strip() for item in value.strip("[]").split(",") if item.strip()]


class Seeds:
    """The scratch project, the environment its stages run in, and the overrides the test adds."""

    def __init__(self, project: Path, env: dict[str, str], extra: dict[str, list[str]]):
        self.project, self.env, self.extra = project, env, extra

    def command(self, name: str) -> list[str]:
        """The README's command and the test's overrides after it (DVC applies `-S` in order)."""
        return readme_seed_commands()[name] + [arg for key in self.extra[name] for arg in ("-S", key)]

    def run(self, name: str) -> subprocess.CompletedProcess:
        # Each command starts from the committed params.yaml, as the README says: an experiment's
        # params stay in the workspace after it ran.
        git(self.project, "checkout", "--", "params.yaml")
        return subprocess.run(self.command(name), cwd=self.project, env=self.env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory):
    """A fresh, committed copy of this project whose stages run its own code, and a local server with
    the stand-ins; the overrides each seed command gets."""
    project = tmp_path_factory.mktemp("seeds")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    # `dvc` and `pipeline` of this interpreter, importing the copy's code (the code DVC hashes as deps).
    env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=project, check=True, env=env)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the project as it is")
    imported = subprocess.run(
        ["pipeline", "--help"], cwd=project, env={**env, "PYTHONVERBOSE": "1"}, capture_output=True, text=True
    )
    assert f"{project}/pipeline/cli.py" in imported.stderr, "the stages must run the copied code"

    zip_bytes, mnist = petimages_zip(PET_PER_CLASS), mnist_files()
    cifar = cifar10_tarball(CIFAR_PER_BATCH, CIFAR_TEST)
    files = {
        CATS_DOGS_PATH: zip_bytes,
        **{f"/cvdf-datasets/mnist/{name}": data for name, data in mnist.items()},
        "/~kriz/cifar-10-python.tar.gz": cifar,
    }
    with StandinServer(files) as server:
        base = server.url("")
        photos, redirects, url_list = imagenet_site(base)
        server.files.update(photos)
        server.redirects.update(redirects)
        (project / "fall11_urls.txt.gz").write_bytes(url_list)  # what seed 001's command names, in the project folder
        # URLs quoted for DVC's override grammar (Hydra), which cannot read a bare `~`, as in /~kriz/.
        mnist_pins = (
            "{" + ", ".join(f"{name}: '{hashlib.sha256(data).hexdigest()}'" for name, data in mnist.items()) + "}"
        )
        mnist_source = [f"+fetch.mnist.url='{base}/cvdf-datasets/mnist/'", f"+fetch.mnist.sha256={mnist_pins}"]
        extra = {
            "seed000": [
                f"+fetch.cats-dogs.url='{base}{CATS_DOGS_PATH}'",
                f"+fetch.cats-dogs.sha256='{hashlib.sha256(zip_bytes).hexdigest()}'",
                *SEED000_SPLIT,
                "train.epochs=1",
                # two of its five architectures: each one is two more processes starting TensorFlow
                # (train, evaluate: about 15 s); every architecture trains in tests/test_models.py
                "train.archs=[mlp,cnn-24]",
            ],
            # The stand-in photos are on 127.0.0.1, which a URL list may not reach unless let through.
            "seed001": ["+fetch.download.allow_networks=[127.0.0.1/32]", "train.alexnet.epochs=1"],
            "seed002": [*mnist_source, "train.convnet.epochs=1"],
            "seed003": [
                f"+fetch.cifar10.url='{base}/~kriz/cifar-10-python.tar.gz'",
                f"+fetch.cifar10.sha256='{hashlib.sha256(cifar).hexdigest()}'",
                "train.preact.epochs=1",
            ],
            "seed004": [*mnist_source, "train.epochs=1", "train.lenet5.epochs=1"],
        }
        yield Seeds(project, env, extra)
    shutil.rmtree(project, ignore_errors=True)  # about 2 GB, most of it AlexNet's weights in models/ and the DVC cache


def test_the_readme_has_the_five_seed_commands():
    commands = readme_seed_commands()
    assert sorted(commands) == SEEDS
    for name, argv in commands.items():
        assert "fetch.source" in overrides(argv) and "train.archs" in overrides(argv), name


def experiment_metrics(project: Path, name: str) -> dict[str, dict]:
    """The metrics files of experiment `name` as `dvc exp show --json` reports them, by path. (Its
    nested JSON keeps each file's path; DVC's flat tables drop the path of a metric whose name is unique.)"""
    shown = json.loads(
        subprocess.run(["dvc", "exp", "show", "--json"], cwd=project, check=True, capture_output=True, text=True).stdout
    )
    found = [
        rev["data"]
        for commit in shown
        for group in commit.get("experiments") or []
        for rev in group["revs"]
        if rev.get("name") == name
    ]
    assert len(found) == 1, f"{name} is not in dvc exp show"
    return {path: entry["data"] for path, entry in (found[0].get("metrics") or {}).items() if "data" in entry}


def finite_numbers(path: Path) -> dict[str, float]:
    """A metrics file's values, flattened (`train.loss`); each must be a finite number."""

    def flat(tree: dict, prefix: str = "") -> dict:
        return {
            k: v
            for key, value in tree.items()
            for k, v in (
                flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
            ).items()
        }

    values = flat(json.loads(path.read_text()))
    assert values and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()), (path, values)
    return values


@pytest.mark.slow
@pytest.mark.parametrize("name", SEEDS)
def test_seed_experiment_runs_offline_and_writes_its_metrics(seeds, name):
    proc = seeds.run(name)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    project, params = seeds.project, overrides(seeds.command(name))
    archs = listed(params["train.archs"])

    meta = json.loads((project / "data/prepared/meta.json").read_text())
    if "prepare.size" in params:
        assert meta["input_shape"][:2] == [int(v) for v in listed(params["prepare.size"])]
    if params.get("prepare.color") == "grayscale":
        assert meta["input_shape"][2] == 1
    if "prepare.train_size" in params:  # seed 000's counts
        assert meta["splits"] == {"train": int(params["prepare.train_size"]), "val": int(params["prepare.val_size"])}

    for arch in archs:
        metrics = finite_numbers(project / f"metrics/{arch}.json")
        assert metrics["epochs"] == 1, "the test shortens every training to one epoch"
        finite_numbers(project / f"dvclive/{arch}/metrics.json")
        assert (project / f"models/{arch}/model.keras").is_file()

    shown = experiment_metrics(project, name)
    assert {f"metrics/{arch}.json" for arch in archs} | {f"dvclive/{arch}/metrics.json" for arch in archs} <= set(
        shown
    ), sorted(shown)
    for arch in archs:
        assert shown[f"metrics/{arch}.json"] == json.loads((project / f"metrics/{arch}.json").read_text())
    # (in this process: the same code as the copy's, and no second start of DVC and pandas)
    board = run_cli("leaderboard", "--json", "--sort", "accuracy", cwd=project, check=False)
    assert board.returncode == 0, (
        board.stderr
    )  # (after seed002 alone, DVC's flat table names its metrics without their file)
    assert {(row["experiment"], row["arch"]) for row in json.loads(board.stdout)} >= {(name, arch) for arch in archs}
    assert set(meta["classes"]) == set(
        json.loads((project / f"data/raw/{params['fetch.source']}/dataset.json").read_text())["classes"]
    )
    if name == "seed000":
        check_archive_fetch(project / "data/raw/cats-dogs")
    if name == "seed001":
        check_url_list_fetch(project / "data/raw/imagenet")


def check_archive_fetch(raw: Path) -> None:
    """Every image of the PetImages stand-in kept; the broken files the real zip has skipped, with reasons."""
    import pandas as pd

    manifest = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False).set_index("origin")
    assert (manifest["status"] == "success").sum() == 2 * PET_PER_CLASS
    for member in ("PetImages/Cat/666.jpg", "PetImages/Dog/11702.jpg", "PetImages/Cat/Thumbs.db", "readme[1].txt"):
        assert manifest.loc[member, "status"] == "skipped" and manifest.loc[member, "error_message"], member


def check_url_list_fetch(raw: Path) -> None:
    """The URL list has dead links, Flickr placeholders and HTML pages: the source drew further URLs
    and still filled 100 + 50 images per synset."""
    import pandas as pd

    manifest = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)
    ok = manifest[manifest["status"] == "success"]
    assert ok.groupby(["class", "split"]).size().to_dict() == {
        (w, s): n for w in IMAGENET_WNIDS for s, n in (("train", 100), ("val", 50))
    }
    reasons = " ".join(manifest["error_message"])
    assert "404" in reasons and "photo_unavailable" in reasons, reasons
