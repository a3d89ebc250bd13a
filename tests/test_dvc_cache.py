"""DVC's cache at dataset scale (issue 19): .dvc/config's `cache.type = hardlink` makes each tracked
output a hard link to its cache object, so data/ and models/ are stored once, and no stage writes
through such a link.

Why hard links are safe here: `dvc repro` and `dvc exp run` (in the workspace, a temp folder or a
queue worker) delete a stage's outputs before they run it, unless an output is `persist` (none is).
Every writer in pipeline/ also writes to a temporary name and renames it (`atomic_file`, `staged_dir`),
so a `pipeline` command run by hand replaces a linked file and never writes into it.

Why hardlink alone: DVC commits a new output by hard-linking it into the cache only when hardlink is
the first type (reflink first leaves ext4 with a copy beside the cache), and with any fallback after
it (reflink, copy) it keeps as copies the rerun's files whose content the cache already holds (a rerun
that changes little, `dvc repro --force`) until `dvc checkout --relink`. Where hard links cannot be
made (a cache on another file system, another user's objects in a shared cache), DVC warns and a
checkout fails, naming the cause; `dvc config --local cache.type hardlink,copy` is the answer there.
`symlink` never: the readers of fetched images (read_capped, the shard reader) open them with
O_NOFOLLOW and skip links.

The slow tests reuse the tiny project reproduced once a session (tests/dvc_projects.py: it runs
with DVC's default cache type) on a copy, with this repository's `cache.type` set and
`dvc checkout --relink`; then a param change reruns the stages that write the cached outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from configobj import ConfigObj
from ruamel.yaml import YAML

from tests import dvc_projects
from tests.conftest import ROOT
from tests.dvc_projects import commit_all, copy_project, git

TIMEOUT = 600  # seconds for any one DVC command (a stage rerun of the tiny project takes ~20 s)
CACHED = ("data", "models")  # where dvc.yaml's cached outputs are (everything else is cache: false)


def cache_type() -> str:
    """This repository's `cache.type`, as a clone reads it from .dvc/config (unset: DVC's default)."""
    return ConfigObj(str(ROOT / ".dvc" / "config")).get("cache", {}).get("type", "reflink,copy")


def dvc(project: Path, *args: str) -> str:
    """`dvc ARGS` in `project` (bounded in time); its stdout."""
    proc = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def cache_object(project: Path, md5: str) -> Path:
    return project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def output_hashes(project: Path) -> dict[str, str]:
    """dvc.lock's hash of each cached output: path -> md5."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {out.def_path: out.hash_info.value for stage in repo.index.stages for out in stage.outs if out.use_cache}


def cached_files(project: Path) -> dict[Path, str]:
    """Every file of the project's cached outputs, as dvc.lock records them: path -> md5."""
    files = {}
    for out, md5 in output_hashes(project).items():
        if md5.endswith(".dir"):
            for entry in json.loads(cache_object(project, md5).read_text()):
                files[project / out / entry["relpath"]] = entry["md5"]
        else:
            files[project / out] = md5
    return files


def assert_linked(project: Path) -> int:
    """Each file of every cached output is its cache object (one inode); how many there are."""
    files = cached_files(project)
    assert {path.relative_to(project).parts[0] for path in files} == set(CACHED)
    unlinked = [
        path.relative_to(project).as_posix()
        for path, md5 in files.items()
        if path.stat().st_ino != cache_object(project, md5).stat().st_ino
    ]
    assert not unlinked, f"{len(unlinked)} of {len(files)} output files are copies, not the cache's: {unlinked[:5]}"
    return len(files)


def assert_cache_intact(project: Path) -> int:
    """Every object in the cache still hashes to its name (a stage that wrote into a linked output
    would have changed the object too); how many there are."""
    objects = [p for p in (project / ".dvc" / "cache" / "files" / "md5").glob("*/*") if p.is_file()]
    damaged = [p for p in objects if hashlib.md5(p.read_bytes()).hexdigest() != p.parent.name + p.stem]
    assert objects and not damaged, f"cache objects that no longer match their names: {damaged}"
    return len(objects)


def stored_kb(project: Path, *paths: str) -> int:
    """The disk space of the files under `paths` (in kB), each inode counted once, as one `du -sk
    --total` counts a hard-linked file; without folders' own blocks, which are not data: the cache's
    up to 256 two-letter folders take 4 kB each, 13% of the tiny project's outputs and nothing at scale."""
    seen, blocks = set(), 0
    for path in paths:
        for folder, _, names in os.walk(project / path):
            for name in names:
                st = os.lstat(os.path.join(folder, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    blocks += st.st_blocks
    return blocks // 2  # 512-byte blocks


def assert_stored_once(project: Path) -> float:
    """data/ and models/ with the cache take at most 1.15x their own space; the ratio (copies: 2x)."""
    ratio = stored_kb(project, *CACHED, ".dvc/cache") / stored_kb(project, *CACHED)
    assert ratio <= 1.15, f"data/, models/ and .dvc/cache take {ratio:.2f}x data/ and models/ alone"
    return ratio


# --- The configuration ----------------------------------------------------------------------------


def test_the_cache_type_is_hardlink_alone():
    # first: DVC links a new output into the cache only then; alone: a fallback type would keep a
    # rerun's already-cached files as copies; never symlink: read_capped and the shard reader refuse links
    assert [t.strip() for t in cache_type().split(",")] == ["hardlink"]


def test_no_cached_output_persists():
    """The safety of links rests on DVC deleting each output before its stage reruns: a `persist`
    output would be kept, and a stage that wrote into it would write into the cache."""
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for out in stage.get("do", stage).get("outs", []):
            if isinstance(out, dict):
                ((path, flags),) = out.items()
                assert not flags.get("persist"), f"{name}: {path} is persist"


# --- On the reproduced tiny project ---------------------------------------------------------------


@pytest.fixture
def linked(request, tmp_path_factory, tmp_path) -> Path:
    """A copy of the reproduced tiny project with this repository's cache type, its outputs relinked
    to the cache (the copy made them copies), committed to git."""
    reproduced = dvc_projects.reproduced(request.config, tmp_path_factory)
    project = copy_project(reproduced.root, tmp_path / "project")
    dvc(project, "config", "cache.type", cache_type())
    dvc(project, "checkout", "--relink")
    commit_all(project, "tiny run, linked")
    return project


@pytest.mark.slow
def test_outputs_share_their_blocks_with_the_cache_here_and_in_a_clone(linked, tmp_path):
    assert_linked(linked)
    assert_stored_once(linked)
    assert "Data and pipelines are up to date" in dvc(linked, "status")

    # A fresh clone's `dvc pull` from a remote: the objects land in its cache, the outputs link to them.
    dvc(linked, "remote", "add", "-d", "store", str(tmp_path / "store"))
    commit_all(linked, "remote")
    dvc(linked, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(linked), str(clone))
    dvc(clone, "pull")
    assert assert_linked(clone) == assert_linked(linked)
    assert_stored_once(clone)
    assert "Data and pipelines are up to date" in dvc(clone, "status")


@pytest.mark.slow
def test_rerunning_stages_over_linked_outputs_leaves_the_cache_intact(linked):
    """Another synthetic seed reruns fetch, survey, prepare (its pwrite into fresh arrays) and
    train@mlp, whose outputs are links to the cache when they start (`dvc exp run`, as `dvc repro`;
    a queue worker's temp folder removes outputs before a stage runs the same way)."""
    before = {path: path.read_bytes() for path in cached_files(linked)}
    outs = output_hashes(linked)
    dvc(linked, "exp", "run", "-S", "fetch.synthetic.seed=1", "train@mlp")
    rerun = output_hashes(linked)
    assert {path for path in outs if rerun[path] != outs[path]} == {"data/raw/synthetic", "data/prepared", "models/mlp"}
    assert_linked(linked)  # the new outputs are linked by the run itself
    assert_cache_intact(linked)

    # Back to the commit: every old output comes back from the cache, byte for byte.
    git(linked, "checkout", "--", ".")
    dvc(linked, "checkout", "--force")
    assert "Data and pipelines are up to date" in dvc(linked, "status")
    assert_linked(linked)
    assert not [path for path, data in before.items() if path.read_bytes() != data]
