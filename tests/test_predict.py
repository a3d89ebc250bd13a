"""`pipeline predict`: prepare's preprocessing (the very same pixels), per-file errors, user errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import ImageError, InputError
from pipeline.report.predict import default_arch, read_image
from tests.conftest import run_cli


def val_files(project, n=4):
    """(path, row) of the first `n` validation images, from prepare's index.csv."""
    index = pd.read_csv(project / "data/prepared/index.csv")
    val = index[index["split"] == "val"].head(n)
    return [(project / "data/raw/synthetic" / path, int(row)) for path, row in zip(val["path"], val["row"])]


def test_read_image_gives_exactly_the_prepared_pixels(evaluated_project):
    meta = json.loads((evaluated_project / "data/prepared/meta.json").read_text())
    x_val = np.load(evaluated_project / "data/prepared/val_x.npy")
    size = tuple(meta["input_shape"][:2])
    for path, row in val_files(evaluated_project, 6):
        assert np.array_equal(read_image(path, size, meta["aspect"], meta["color"]), x_val[row]), path


def test_predict_matches_evaluation_and_reports_bad_files(evaluated_project, tmp_path):
    files = val_files(evaluated_project)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    good = files[0][0].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    bad = [
        tmp_path / "notes.txt",
        tmp_path / "missing.jpg",
        tmp_path / "empty.jpg",
        tmp_path / "truncated.jpg",
        tmp_path,
    ]
    args = [str(files[0][0]), *map(str, bad[:3]), *(str(p) for p, _ in files[1:]), *map(str, bad[3:])]
    proc = run_cli("predict", "--arch", "cnn", "--json", *args, cwd=evaluated_project, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 5 of 9 files could not be predicted")
    records = json.loads(proc.stdout)
    assert [r["path"] for r in records] == args  # every file, in order

    # The good files get the class the evaluation gave their validation rows.
    confusion = json.loads((evaluated_project / "plots/cnn/confusion.json").read_text())
    by_path = {r["path"]: r for r in records}
    for path, row in files:
        record = by_path[str(path)]
        assert record["error"] is None and record["arch"] == "cnn"
        assert record["cls"] == confusion[row]["predicted"]
        assert 0.5 <= record["probability"] <= 1
    errors = {r["path"]: r["error"] for r in records if r["error"]}
    assert errors[str(tmp_path / "notes.txt")].startswith("not an image")
    assert errors[str(tmp_path / "missing.jpg")] == "file not found"
    assert errors[str(tmp_path / "empty.jpg")] == "empty file"
    assert errors[str(tmp_path / "truncated.jpg")].startswith("truncated")
    assert "folder" in errors[str(tmp_path)]

    table = run_cli("predict", str(files[0][0]), cwd=evaluated_project).stdout  # default arch, table output
    assert files[0][0].name in table and ("vertical" in table or "horizontal" in table)


@pytest.mark.parametrize(
    "args, expected",
    [
        (("predict", "--arch", "resnet", "x.jpg"), "unknown value 'resnet'; valid choices:"),
        (("predict", "--arch", "mlp", "--model", "nowhere.keras", "x.jpg"), "model not found: nowhere.keras"),
        (("predict", "--arch", "mlp", "--data", "nowhere", "x.jpg"), "prepared data not found: nowhere/meta.json"),
    ],
)
def test_predict_user_errors_are_one_line(evaluated_project, args, expected):
    proc = run_cli(*args, cwd=evaluated_project, check=False)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_predict_refuses_data_prepared_at_another_size(evaluated_project, tmp_path):
    other = tmp_path / "prepared"
    shutil.copytree(evaluated_project / "data/prepared", other)
    meta = json.loads((other / "meta.json").read_text())
    meta["input_shape"] = [meta["input_shape"][0] + 1, *meta["input_shape"][1:]]
    (other / "meta.json").write_text(json.dumps(meta))
    path = val_files(evaluated_project, 1)[0][0]
    proc = run_cli("predict", "--arch", "cnn", "--data", str(other), str(path), cwd=evaluated_project, check=False)
    assert proc.returncode == 2 and "retrain" in proc.stderr and "Traceback" not in proc.stderr


def test_read_image_errors():
    with pytest.raises(ImageError, match="not an image"):
        read_image(Path(__file__), (8, 8), "stretch", "rgb")


def test_default_arch_is_the_best_evaluated_on_the_current_data(evaluated_project, tmp_path):
    data = evaluated_project / "data/prepared"
    current = json.loads((evaluated_project / "metrics/cnn.dataset.json").read_text())
    metrics = tmp_path / "metrics"
    metrics.mkdir()

    def evaluated(arch, values, identity):
        (metrics / f"{arch}.json").write_text(json.dumps(values))
        if identity is not None:
            (metrics / f"{arch}.dataset.json").write_text(json.dumps(identity))

    evaluated("mlp", {"mse": 0.3, "accuracy": 0.9}, current)
    evaluated("cnn", {"mse": 0.1, "accuracy": 0.8}, current)
    evaluated(
        "lenet5", {"mse": 0.01, "accuracy": 0.99}, {**current, "source": "mnist", "fingerprint": "0" * 64}
    )  # better, on other data
    evaluated("convnet", {"mse": 0.0, "accuracy": 1.0}, None)  # evaluated before the data was recorded
    archs = ["mlp", "cnn", "lenet5", "convnet"]
    assert default_arch(metrics, "mse", archs, data) == "cnn"  # lower is better
    assert default_arch(metrics, "accuracy", archs, data) == "mlp"
    assert default_arch(tmp_path / "none", "mse", archs, data) == "mlp"  # nothing evaluated yet: the first arch
    for arch in ("mlp", "cnn"):
        (metrics / f"{arch}.dataset.json").unlink()
    with pytest.raises(InputError, match=r"no model in .* was evaluated on the current .*lenet5 \(mnist 00000000\)"):
        default_arch(metrics, "mse", archs, data)
