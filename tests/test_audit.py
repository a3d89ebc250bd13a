"""The audit stage (`pipeline audit`) and prepare's leakage control (`prepare.dedupe`): each kind of
duplicate group, in both layouts, label issues from a trained model, a dataset with nothing to find,
hostile input and the one-line errors."""

from __future__ import annotations

import errno
import json
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.audit.labels import rank
from pipeline.core.images import dhash
from tests.conftest import kill_at, run_cli
from tests.shards import Sample, encode, write_folder_dataset, write_shard_dataset

PARAMS = "prepare: {size: [16, 16]}\n"


@pytest.fixture(autouse=True)
def params(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS)


def picture(seed: int, h: int = 60, w: int = 80) -> np.ndarray:
    """A distinct RGB picture: a smooth random colour field with a few discs."""
    r = np.random.default_rng([42, seed])
    img = cv2.resize(r.integers(0, 256, (4, 5, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        colour = tuple(int(v) for v in r.integers(0, 256, 3))
        cv2.circle(img, (int(r.integers(0, w)), int(r.integers(0, h))), int(r.integers(4, 20)), colour, -1)
    return img


def near_copy(img: np.ndarray) -> bytes:
    """The same picture resized to 0.8x, 2% brighter, re-encoded as JPEG at quality 70."""
    small = cv2.resize(img, (int(img.shape[1] * 0.8), int(img.shape[0] * 0.8)), interpolation=cv2.INTER_AREA)
    return _jpeg(np.clip(small * 1.02, 0, 255).astype(np.uint8), 70)


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def sample(cls: str, data: bytes, split: str = "", status: str = "success") -> Sample:
    ext = "png" if data[:4] == b"\x89PNG" else "jpg"
    return Sample(cls, data, ext, split, status)


def planted(fixed_split: bool = True) -> tuple[list[Sample], dict[str, int]]:
    """24 distinct pictures in two classes plus: an exact copy within a class, a near copy within a
    class, a near copy under the other class, and a validation near copy of a training picture.
    Returns the samples and the index of each planted copy."""
    split = (lambda i: "val" if i % 6 >= 4 else "train") if fixed_split else (lambda i: "")
    base = [picture(i) for i in range(24)]
    samples = [sample("ab"[i % 2], encode(img, "png"), split(i)) for i, img in enumerate(base)]
    at = {}
    at["exact"] = len(samples)
    samples.append(sample("a", samples[0].data, "train" if fixed_split else ""))  # picture 0, class a
    at["near"] = len(samples)
    samples.append(sample("a", near_copy(base[2]), "train" if fixed_split else ""))  # picture 2, class a
    at["cross"] = len(samples)
    samples.append(sample("a", near_copy(base[7]), "train" if fixed_split else ""))  # picture 7 is class b
    at["leak"] = len(samples)
    samples.append(sample("b", near_copy(base[9]), "val" if fixed_split else ""))  # picture 9: b, train
    return samples, at


def audit_json(root: Path, cwd: Path, *args: str) -> dict:
    proc = run_cli("audit", "--in", str(root), "--json", *args, cwd=cwd)
    return json.loads(proc.stdout)


def _groups_by_paths(report: dict) -> dict[frozenset, dict]:
    return {frozenset(m["path"] for m in g["members"]): g for g in report["duplicate_groups"]}


def test_near_copies_hash_close_and_distinct_pictures_far():
    a, b = dhash(encode(picture(1), "png")), dhash(near_copy(picture(1)))
    c = dhash(encode(picture(2), "png"))
    assert bin(a ^ b).count("1") <= 8 < bin(a ^ c).count("1")


@pytest.mark.parametrize("layout", ["folder", "shards"])
def test_each_kind_of_group_is_found(tmp_path, layout):
    samples, at = planted()
    root = tmp_path / "data"
    if layout == "folder":
        write_folder_dataset(root, samples)
        path = {i: f"{s.cls}/{i:05d}.{s.ext}" for i, s in enumerate(samples)}
    else:
        write_shard_dataset(root, samples, per_shard=10)
        path = {i: f"shards/{i // 10:05d}.tar#{i // 10:05d}{i % 10:04d}.{s.ext}" for i, s in enumerate(samples)}
    report = audit_json(root, tmp_path)
    groups = _groups_by_paths(report)
    exact = groups[frozenset({path[0], path[at["exact"]]})]
    assert exact["kind"] == "exact" and not exact["cross_class"] and exact["max_distance"] == 0
    near = groups[frozenset({path[2], path[at["near"]]})]
    assert near["kind"] == "near" and not near["cross_class"] and not near["leakage"]
    cross = groups[frozenset({path[7], path[at["cross"]]})]
    assert cross["cross_class"] and {m["class"] for m in cross["members"]} == {"a", "b"}
    leak = groups[frozenset({path[9], path[at["leak"]]})]
    assert leak["leakage"] and {m["split"] for m in leak["members"]} == {"train", "val"}
    assert len(groups) == 4, "no distinct pictures grouped"
    # conflicts first, then leaks
    assert report["duplicate_groups"][0]["cross_class"] and report["duplicate_groups"][1]["leakage"]
    assert report["summary"] == {
        "duplicate_groups": 4,
        "exact_groups": 1,
        "near_groups": 3,
        "cross_class_groups": 1,
        "leakage_groups": 1,
        "items_in_groups": 8,
        "label_issues": 0,
        "unreadable": 0,
    }
    assert report["label_issues"] == [] and report["label_issues_computed"] is False
    assert [row["items"] for row in report["balance"]] == [15, 13]


def test_fetch_duplicates_join_their_owner_group(tmp_path):
    """An image fetch stored once for two URLs (status duplicate), one under each class, is a conflict."""
    samples = [sample("ab"[i % 2], encode(picture(i), "png")) for i in range(6)]
    samples.append(sample("b", samples[0].data, status="duplicate"))
    root = write_shard_dataset(tmp_path / "data", samples, per_shard=4)
    report = audit_json(root, tmp_path)
    (group,) = report["duplicate_groups"]
    assert group["kind"] == "exact" and group["cross_class"]
    assert [m["class"] for m in group["members"]] == ["a", "b"]
    assert report["balance"][1]["statuses"] == {"duplicate": 1, "success": 3}


def test_a_dataset_with_nothing_to_find_gives_an_empty_valid_report(tmp_path):
    root = write_folder_dataset(tmp_path / "data", [sample("ab"[i % 2], encode(picture(i), "png")) for i in range(12)])
    out, plots = tmp_path / "audit.json", tmp_path / "plots"
    run_cli("audit", "--in", str(root), "--out", str(out), "--plots", str(plots), cwd=tmp_path)
    report = json.loads(out.read_text())
    assert report["duplicate_groups"] == [] and report["label_issues"] == [] and report["unreadable"] == []
    assert set(report["summary"].values()) == {0}
    assert (plots / "duplicates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = out.read_bytes(), (plots / "duplicates.png").read_bytes(), (plots / "label_issues.png").read_bytes()
    run_cli("audit", "--in", str(root), "--out", str(out), "--plots", str(plots), cwd=tmp_path)
    assert (
        out.read_bytes(),
        (plots / "duplicates.png").read_bytes(),
        (plots / "label_issues.png").read_bytes(),
    ) == first


def test_a_large_group_keeps_every_member_and_draws_the_first(tmp_path):
    """Ten near copies of one picture: one group of eleven in the report, its sheet drawn."""
    img = picture(0)
    copies = [_jpeg(cv2.resize(img, (80 - 2 * i, 60 - i)), 90 - 3 * i) for i in range(10)]
    samples = [sample("a", encode(img, "png"))] + [sample("a", c) for c in copies]
    samples += [sample("b", encode(picture(i), "png")) for i in range(1, 4)]
    root = write_folder_dataset(tmp_path / "data", samples)
    run_cli("audit", "--in", str(root), "--out", "audit.json", "--plots", "plots", cwd=tmp_path)
    (group,) = json.loads((tmp_path / "audit.json").read_text())["duplicate_groups"]
    assert len(group["members"]) == 11 and group["kind"] == "near"
    assert (tmp_path / "plots/duplicates.png").stat().st_size > 10_000  # eight thumbnails and "+3 more"


def test_plain_folder_and_unreadable_items(tmp_path):
    """A folder without a manifest: hashes from the files; a corrupt file is reported, not fatal."""
    root = tmp_path / "plain"
    for i in range(8):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        (root / "ab"[i % 2] / f"{i}.png").write_bytes(encode(picture(i), "png"))
    (root / "a" / "copy.jpg").write_bytes(near_copy(picture(4)))
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    report = audit_json(root, tmp_path)
    assert [{m["path"] for m in g["members"]} for g in report["duplicate_groups"]] == [{"a/4.png", "a/copy.jpg"}]
    assert [u["path"] for u in report["unreadable"]] == ["b/broken.jpg"]
    assert "balance" in report and report["balance"][0]["class"] == "a" and "statuses" not in report["balance"][0]


def test_label_issues_from_a_trained_model(evaluated_project):
    """Label issues need the prepared data and its model: well-formed, best candidate first, and the
    split of each group member is the prepared one."""
    report = audit_json(
        evaluated_project / "data/raw/synthetic",
        evaluated_project,
        "--prepared",
        "data/prepared",
        "--model",
        "models/cnn/model.keras",
    )
    assert report["label_issues_computed"] is True
    issues = report["label_issues"]
    assert [i["score"] for i in issues] == sorted(i["score"] for i in issues)
    index = pd.read_csv(evaluated_project / "data/prepared/index.csv")
    val = set(index.loc[index["split"] == "val", "path"])
    for issue in issues:
        assert set(issue) == {"path", "given", "suggested", "score"} and issue["path"] in val
        assert issue["given"] != issue["suggested"] or issue["score"] >= 0.5


def test_rank_puts_flipped_labels_first():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), labels] = 0.9
    flipped = rng.choice(300, 15, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 3
    ranking = rank(noisy, probs)
    assert set(ranking.order[:15]) == set(flipped)
    assert ranking.flagged[flipped].all() and ranking.flagged.sum() == 15
    assert (ranking.suggested[flipped] == labels[flipped]).all()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["audit", "--in", "data", "--prepared", "p"], "--prepared and --model go together"),
        (["audit", "--in", "nowhere"], "input folder not found: nowhere"),
        (["-S", "audit.near_distance=40", "audit", "--in", "data"], "audit.near_distance"),
        (["audit", "--in", "data", "--prepared", "p", "--model", "m.keras"], "p"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, expected):
    write_folder_dataset(tmp_path / "data", [sample("ab"[i % 2], encode(picture(i), "png")) for i in range(4)])
    proc = run_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and expected in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_prepared_data_of_another_dataset_is_refused(evaluated_project, tmp_path):
    root = write_folder_dataset(tmp_path / "data", [sample("ab"[i % 2], encode(picture(i), "png")) for i in range(4)])
    proc = run_cli(
        "audit",
        "--in",
        str(root),
        "--prepared",
        str(evaluated_project / "data/prepared"),
        "--model",
        str(evaluated_project / "models/cnn/model.keras"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0 and "was prepared from another dataset" in proc.stderr


def test_unreachable_scheduler_is_one_line_within_the_deadline(tmp_path):
    root = write_folder_dataset(tmp_path / "data", [sample("ab"[i % 2], encode(picture(i), "png")) for i in range(4)])
    with socket.socket() as sock:  # a port with nothing listening on loopback
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_cli(
        "-S", "audit.engine=dask", "-S", f"audit.scheduler=tcp://127.0.0.1:{port}",
        "audit", "--in", str(root), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_a_full_disk_leaves_no_report(tmp_path, monkeypatch):
    """ENOSPC while the report is written: one line, and no (partial) report a reader could trust."""
    import pipeline.core.files as files

    root = write_folder_dataset(tmp_path / "data", [sample("ab"[i % 2], encode(picture(i), "png")) for i in range(4)])
    real = files.os.replace

    def full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(files.os, "replace", full)
    proc = run_cli("audit", "--in", str(root), "--out", str(tmp_path / "audit.json"), cwd=tmp_path, check=False)
    monkeypatch.setattr(files.os, "replace", real)
    assert proc.returncode != 0 and "no space left on device" in proc.stderr.lower()
    assert not (tmp_path / "audit.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".audit")] == []


@pytest.mark.slow
def test_a_killed_audit_leaves_the_last_report_whole(tmp_path):
    """kill -9 while the images are being hashed: the report of the last finished run stays, whole;
    the next run completes."""
    samples = [sample("ab"[i % 2], encode(picture(i), "png")) for i in range(8)]
    root = write_folder_dataset(tmp_path / "data", samples)
    args = ["audit", "--in", "data", "--out", "audit.json", "--plots", "plots"]
    run_cli(*args, cwd=tmp_path)
    before = (tmp_path / "audit.json").read_bytes()
    (root / "a" / "copy.jpg").write_bytes(near_copy(picture(0)))  # a plain folder now: hashed from the files
    (root / "manifest.csv").unlink()
    assert kill_at(args, tmp_path, "hash.group", 1)
    assert (tmp_path / "audit.json").read_bytes() == before
    run_cli(*args, cwd=tmp_path)
    assert json.loads((tmp_path / "audit.json").read_text())["summary"]["near_groups"] == 1


# --- prepare.dedupe --------------------------------------------------------------------------------


def _prepare(root: Path, cwd: Path, dedupe: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = cwd / f"prepared-{dedupe}"
    shutil.rmtree(out, ignore_errors=True)
    run_cli("-S", f"prepare.dedupe={dedupe}", "prepare", "--in", str(root), "--out", str(out), cwd=cwd)
    return pd.read_csv(out / "index.csv"), pd.read_csv(out / "skipped.csv")


@pytest.mark.parametrize("layout", ["folder", "shards"])
def test_prepare_drops_the_validation_copy_of_a_training_item(tmp_path, layout):
    samples, at = planted()
    root = tmp_path / "data"
    (write_folder_dataset if layout == "folder" else lambda r, s: write_shard_dataset(r, s, per_shard=10))(
        root, samples
    )
    index, skipped = _prepare(root, tmp_path, "near")
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    assert len(index) == len(samples) - 4 and len(skipped) == 4
    kept = set(index["path"])
    leak = [(p, r) for p, r in reasons.items() if r.startswith("leakage")]
    assert len(leak) == 1
    (path, reason) = leak[0]
    assert "a validation near duplicate of training item" in reason and reason.split()[-1] in kept
    assert index.loc[index["path"] == reason.split()[-1], "split"].item() == "train"
    assert sum(r.startswith("exact duplicate of") for r in reasons.values()) == 1
    assert sum(r.startswith("near duplicate of") for r in reasons.values()) == 2
    # exact: only the byte-identical copy; none: everything
    index, skipped = _prepare(root, tmp_path, "exact")
    assert len(index) == len(samples) - 1 and skipped["reason"].str.startswith("exact duplicate of").all()
    index, skipped = _prepare(root, tmp_path, "none")
    assert len(index) == len(samples) and skipped.empty


def test_prepare_dedupe_with_a_drawn_split_keeps_one_of_each_group_and_is_deterministic(tmp_path):
    samples, _ = planted(fixed_split=False)
    root = write_folder_dataset(tmp_path / "data", samples)
    index, skipped = _prepare(root, tmp_path, "near")
    assert len(index) == len(samples) - 4 and not skipped["reason"].str.startswith("leakage").any()
    out = tmp_path / "prepared-near"
    before = [(out / name).read_bytes() for name in ("index.csv", "skipped.csv", "train_x.npy", "val_x.npy")]
    _prepare(root, tmp_path, "near")
    assert [(out / name).read_bytes() for name in ("index.csv", "skipped.csv", "train_x.npy", "val_x.npy")] == before
