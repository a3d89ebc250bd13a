"""The folder source: any directory of class subfolders, validated and copied; the input never changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.errors import ConfigError, InputError
from pipeline.fetch.params import FetchParams
from pipeline.fetch.sources import FolderParams
from pipeline.fetch.sources.folder import fetch
from tests.conftest import run_cli
from tests.test_catsdogs import catalogue

SETTINGS = FetchParams()


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every path under `root` with its content hash (or 'dir') and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[path.relative_to(root).as_posix()] = (digest, path.stat().st_mtime_ns)
    return out


def make_tree(root: Path) -> dict[str, tuple[bytes, str, str]]:
    """cats/ and dogs/ with the catalogue (dogs one folder deeper), plus files out of place."""
    expected = {}
    for cls, sub, seed in (("cats", "", 0), ("dogs", "2019/", 100)):
        for name, (data, status, reason) in catalogue(seed).items():
            rel = f"{cls}/{sub}{name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            expected[rel] = (data, status, reason)
    (root / "notes.txt").write_bytes(b"top-level file")
    expected["notes.txt"] = (b"", "skipped", "not in a class subfolder")
    (root / "cats" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    expected["cats/.DS_Store"] = (b"", "skipped", "system file")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")  # hidden folders are not read
    return expected


def check(out: Path, expected: dict[str, tuple[bytes, str, str]], classes: list[str]) -> dict[str, dict]:
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    rows = {row["origin"]: row for row in frame.to_dict("records")}
    assert set(rows) == set(expected), "one manifest row per file"
    for origin, (data, status, reason) in expected.items():
        row = rows[origin]
        assert (row["status"], row["error_message"][: len(reason)]) == (status, reason), (origin, row)
        if status == "success":
            assert (out / row["path"]).read_bytes() == data and row["class"] == origin.split("/")[0]
        if status == "duplicate":
            assert rows[row["error_message"].removeprefix("duplicate of ")]["path"] == row["path"]
    assert json.loads((out / "dataset.json").read_text())["classes"] == classes
    return rows


def test_folder_copies_valid_images_and_records_the_rest(tmp_path):
    src = tmp_path / "photos"
    expected = make_tree(src)
    before = snapshot(src)
    result = fetch(tmp_path / "out", FolderParams(path=str(src)), SETTINGS)
    check(tmp_path / "out", expected, ["cats", "dogs"])
    assert snapshot(src) == before, "the input folder is left exactly as it was"
    assert result.counts == {"duplicate": 2, "success": 14, "skipped": 14}


def test_folder_unreadable_and_oversized_files(tmp_path):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    data = catalogue()["1.jpg"][0]
    (src / "a" / "ok.jpg").write_bytes(data)
    (src / "a" / "big.jpg").write_bytes(data + bytes(2000))
    (src / "a" / "dangling.jpg").symlink_to(src / "nowhere.jpg")
    (tmp_path / "secret.jpg").write_bytes(data)
    (src / "a" / "outside.jpg").symlink_to(tmp_path / "secret.jpg")  # a valid image, but outside --path
    os.mkfifo(src / "a" / "pipe.jpg")
    fetch(tmp_path / "out", FolderParams(path=str(src), max_file_bytes=len(data) + 1000), SETTINGS)
    check(
        tmp_path / "out",
        {
            "a/ok.jpg": (data, "success", ""),
            "a/big.jpg": (b"", "skipped", "too large"),
            "a/dangling.jpg": (b"", "skipped", "symbolic link, not followed"),
            "a/outside.jpg": (b"", "skipped", "symbolic link, not followed"),
            "a/pipe.jpg": (b"", "skipped", "not a regular file"),
        },
        ["a"],
    )


def test_folder_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="--path"):
        fetch(tmp_path / "out", FolderParams(), SETTINGS)
    with pytest.raises(InputError, match="folder not found"):
        fetch(tmp_path / "out", FolderParams(path=str(tmp_path / "nope")), SETTINGS)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="no class subfolders"):
        fetch(tmp_path / "out", FolderParams(path=str(tmp_path / "flat")), SETTINGS)
    (tmp_path / "flat" / "cls").mkdir()
    with pytest.raises(ConfigError, match="overlap"):
        fetch(tmp_path / "flat" / "out", FolderParams(path=str(tmp_path / "flat")), SETTINGS)


def test_folder_cli_then_prepare(tiny_project):
    expected = make_tree(tiny_project / "photos")
    run_cli("fetch", "--source", "folder", "--path", "photos", "--out", "data/raw/folder", cwd=tiny_project)
    rows = check(tiny_project / "data/raw/folder", expected, ["cats", "dogs"])
    run_cli("prepare", "--in", "data/raw/folder", "--out", "prepared", "--size", "16x16", cwd=tiny_project)
    meta = json.loads((tiny_project / "prepared" / "meta.json").read_text())
    assert (
        sum(meta["splits"].values()) == sum(row["status"] == "success" for row in rows.values())
        and meta["skipped"] == 0
    )
    proc = run_cli("fetch", "--source", "folder", "--out", "x", cwd=tiny_project, check=False)
    assert proc.returncode == 2 and "fetch.folder.path is not set" in proc.stderr and "Traceback" not in proc.stderr
