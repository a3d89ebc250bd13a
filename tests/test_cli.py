"""The CLI end to end on a tiny synthetic dataset, and its handling of user errors."""

import json
import re

import numpy as np
import pytest

from tests.conftest import run_cli

STAGES = [
    ("fetch",),
    ("survey-shapes", "--out", "reports/survey.json"),
    ("prepare", "--survey", "reports/survey.json"),
    ("train",),
    ("evaluate",),
]


def run_pipeline(project):
    for args in STAGES:
        run_cli(*args, cwd=project)


def test_end_to_end(tiny_project):
    run_pipeline(tiny_project)
    raw = tiny_project / "data/raw/synthetic"
    assert len(list((raw / "vertical").glob("*.jpg"))) == 24 and len(list((raw / "horizontal").glob("*.jpg"))) == 24
    survey = json.loads((tiny_project / "reports/survey.json").read_text())
    assert survey["images"] == 48 and survey["unreadable"] == 0
    assert (tiny_project / "reports/survey.csv").read_text().startswith("height,width,count\n")
    meta = json.loads((tiny_project / "data/prepared/meta.json").read_text())
    h, w = survey["most_common_shape"]
    assert meta["input_shape"] == [round(h * 0.05), round(w * 0.05), 3]
    assert meta["splits"] == {"train": 36, "val": 12}
    for arch in ("mlp", "cnn"):
        assert (tiny_project / f"models/{arch}/model.keras").stat().st_size > 0
        history = (tiny_project / f"models/{arch}/history.csv").read_text().splitlines()
        assert history[0].startswith("epoch,") and len(history) == 2
        metrics = json.loads((tiny_project / f"metrics/{arch}.json").read_text())
        assert {"mse", "pearson", "accuracy", "best_threshold", "best_threshold_accuracy", "params", "epochs"} <= set(
            metrics
        )
        assert all(isinstance(v, (int, float)) for v in metrics.values())
        assert 0 <= metrics["best_threshold_accuracy"] <= 1 and metrics["epochs"] == 1
        run = json.loads((tiny_project / f"runs/{arch}/run.json").read_text())  # git-ignored, declared by no stage
        assert run["train_seconds"] > 0 and run["peak_rss_mb"] > 0
        assert list((tiny_project / f"runs/{arch}/tensorboard").rglob("events.out.tfevents.*"))
        assert sorted(p.name for p in (tiny_project / f"models/{arch}").iterdir()) == [
            "best.keras",
            "history.csv",
            "model.keras",
        ]

    table = run_cli("compare", "--md", "--sort", "mse", cwd=tiny_project).stdout
    lines = [line for line in table.splitlines() if line.startswith("| mlp") or line.startswith("| cnn")]
    assert len(lines) == 2 and "best_threshold_accuracy" in table
    mse = {arch: json.loads((tiny_project / f"metrics/{arch}.json").read_text())["mse"] for arch in ("mlp", "cnn")}
    assert lines[0].startswith(f"| {min(mse, key=mse.get)}")  # mse: lower is better, so it sorts first
    assert "mlp" in run_cli("compare", cwd=tiny_project).stdout


def test_same_params_give_byte_identical_outputs(tmp_path, tiny_project):
    other = tmp_path / "again"
    other.mkdir()
    (other / "params.yaml").write_text((tiny_project / "params.yaml").read_text())
    run_pipeline(tiny_project)
    run_pipeline(other)
    for rel in (
        "data/raw/synthetic/manifest.csv",
        "data/prepared/train_x.npy",
        "data/prepared/index.csv",
        "models/cnn/history.csv",
        "metrics/mlp.json",
        "metrics/cnn.json",
    ):
        assert (tiny_project / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_command_line_options_override_params(tiny_project):
    run_cli("fetch", "--per-class", "5", cwd=tiny_project)
    assert len(list((tiny_project / "data/raw/synthetic/vertical").glob("*.jpg"))) == 5
    run_cli(
        "-S",
        "prepare.train_size=6",
        "prepare",
        "--size",
        "8x12",
        "--color",
        "grayscale",
        "--out",
        "prep",
        cwd=tiny_project,
    )
    x = np.load(tiny_project / "prep/train_x.npy")
    assert x.shape == (6, 8, 12, 1) and x.dtype == np.uint8


@pytest.mark.parametrize(
    "args, expected",
    [
        (("-S", "train.epocs=3", "compare"), "train.epocs: unknown key; valid keys: epochs"),
        (("-S", "train.epochs=ten", "compare"), "train.epochs"),
        (("train", "--arch", "resnet"), "unknown value 'resnet'; valid choices: alexnet, cnn, cnn-128x2"),
        (("fetch", "--source", "flickr"), "unknown value 'flickr'; valid choices: "),
        (("prepare", "--aspect", "squash"), "'stretch', 'pad' or 'center-crop'"),
        (("prepare", "--size", "big"), "--size 'big': expected HEIGHTxWIDTH"),
        (("prepare", "--in", "nowhere"), "input folder not found: nowhere"),
        (("survey-shapes", "nowhere"), "input folder not found: nowhere"),
        (("evaluate", "--arch", "mlp"), "not found"),
        (("-S", "nonsense", "compare"), "expected KEY=VALUE"),
    ],
)
def test_user_errors_are_one_clear_line(tiny_project, args, expected):
    proc = run_cli(*args, cwd=tiny_project, check=False)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_survey_shapes_and_prepare_work_on_any_folder(tmp_path):
    import cv2

    for cls, n in (("a", 3), ("b", 4)):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(
                str(tmp_path / "photos" / cls / f"{i}.png"),
                np.full((30 + (i if cls == "b" else 0), 40, 3), 50 * i + (25 if cls == "b" else 0), np.uint8),
            )
    (tmp_path / "photos/a/notes.txt").write_text("not an image")
    run_cli("survey-shapes", "photos", "--out", "shapes.json", cwd=tmp_path)
    survey = json.loads((tmp_path / "shapes.json").read_text())
    assert survey["images"] == 7 and survey["unreadable"] == 1 and survey["most_common_shape"] == [30, 40]
    run_cli(
        "-S",
        "prepare.train_size=0.7",
        "-S",
        "prepare.val_size=0.3",
        "prepare",
        "--in",
        "photos",
        "--out",
        "arrays",
        "--size",
        "10x12",
        cwd=tmp_path,
    )
    meta = json.loads((tmp_path / "arrays/meta.json").read_text())
    assert meta["classes"] == ["a", "b"] and meta["input_shape"] == [10, 12, 3]
    assert sum(meta["splits"].values()) == 7 and meta["skipped"] == 1
    assert "a/notes.txt" in (tmp_path / "arrays/skipped.csv").read_text()


HEAVY = {"numpy", "pandas", "bs4", "tensorflow", "keras", "dvc", "cv2", "requests", "sklearn", "matplotlib"}
# Runs the command line in-process and lists, at exit, the top-level packages it imported.
LIST_IMPORTS = """
import atexit, runpy, sys
listing = sys.argv.pop(1)
atexit.register(lambda: open(listing, "w").write(" ".join(sorted({m.split(".")[0] for m in sys.modules}))))
sys.argv = ["pipeline", *sys.argv[1:]]
runpy.run_module("pipeline", run_name="__main__")
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["check-params"],
        *[
            [cmd, "--help"]
            for cmd in (
                "fetch",
                "survey-shapes",
                "prepare",
                "train",
                "models",
                "evaluate",
                "compare",
                "report",
                "predict",
            )
        ],
        ["metrics", "diff", "--help"],
    ],
)
def test_help_and_check_params_import_no_heavy_library(tiny_project, args):
    """What every stage and every help screen pays before it starts: no numpy, pandas, TensorFlow, DVC..."""
    import subprocess
    import sys

    listing = tiny_project / "modules.txt"
    proc = subprocess.run(
        [sys.executable, "-c", LIST_IMPORTS, str(listing), *args], cwd=tiny_project, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert not HEAVY & set(listing.read_text().split())


def test_check_params_prints_one_line_unless_asked_to_show(tiny_project):
    proc = run_cli("check-params", cwd=tiny_project)
    assert proc.stdout.splitlines() == ["params.yaml: valid (archs: mlp, cnn; source: synthetic)"] and not proc.stderr
    shown = json.loads(run_cli("check-params", "--show", cwd=tiny_project).stdout)
    assert set(shown) == {"fetch", "survey", "prepare", "train", "evaluate", "audit", "compare"}
    assert shown["train"]["epochs"] == 1
    assert run_cli("-S", "train.epochs=3", "check-params", cwd=tiny_project).stdout.startswith(
        "params.yaml with 1 override(s): valid"
    )


def test_survey_of_another_folder_prints_and_writes_nothing(tiny_project):
    import cv2

    (tiny_project / "photos/a").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(tiny_project / "photos/a" / f"{i}.png"), np.zeros((30, 40, 3), np.uint8))
    missing = run_cli("survey-shapes", cwd=tiny_project, check=False)  # no argument: the pipeline's own data
    assert missing.returncode == 2 and "input folder not found: data/raw/synthetic" in missing.stderr
    run_cli("fetch", "--per-class", "4", cwd=tiny_project)
    (tiny_project / "reports").mkdir()
    (tiny_project / "reports/survey.json").write_text("the pipeline's own survey")
    before = sorted(p.relative_to(tiny_project) for p in tiny_project.rglob("*"))
    proc = run_cli("survey-shapes", "photos", cwd=tiny_project)
    assert "3 images, 0 unreadable" in proc.stdout and "most common shape (height x width): 30x40" in proc.stdout
    assert "nothing written" in proc.stderr
    own = run_cli("survey-shapes", cwd=tiny_project)  # the pipeline's data, still print only
    assert "8 images, 0 unreadable" in own.stdout
    assert sorted(p.relative_to(tiny_project) for p in tiny_project.rglob("*")) == before
    assert (tiny_project / "reports/survey.json").read_text() == "the pipeline's own survey"
    run_cli("survey-shapes", "photos", "--out", "out/s.json", "--plot", "out/shapes.json", cwd=tiny_project)
    assert sorted(p.name for p in (tiny_project / "out").iterdir()) == ["s.csv", "s.json", "shapes.json"]
    assert json.loads((tiny_project / "out/shapes.json").read_text()) == [{"shape": "30x40", "count": 3}]


HELP_DEFAULTS = {
    ("train",): [
        "[default: (each of train.archs)]",
        "[default: (models/<arch>)]",
        "[default: data/prepared]",
        "runs/<model folder name>/tensorboard",
    ],
    ("fetch",): ["[default: (fetch.source)]", "[default: (data/raw/<source>)]"],
    ("survey-shapes",): ["[default: (data/raw/<fetch.source>)]", "[default: (print only)]"],
    ("prepare",): ["[default: (data/raw/<fetch.source>)]", "[default: data/prepared]"],
    ("evaluate",): [
        "[default: (models/<arch>/model.keras)]",
        "[default: (metrics/<arch>.json)]",
        "[default: (plots/<arch>)]",
    ],
    ("report",): ["[default: (summary.html next to --out)]", "[default: reports/summary.md]"],
    ("predict",): ["[default: (models/<arch>/model.keras)]"],
    ("metrics", "diff"): ["[default: HEAD]", "[default: (the workspace)]"],
}


@pytest.mark.parametrize("command", list(HELP_DEFAULTS))
def test_help_shows_defaults_and_choices(tmp_path, command):
    from pipeline.fetch.sources import SOURCES
    from pipeline.train.models import ARCHITECTURES

    text = run_cli(*command, "--help", cwd=tmp_path, env={"COLUMNS": "250"}).stdout
    for default in HELP_DEFAULTS[command]:
        assert default in text, default
    assert not re.search(r"\w \.\s", text)  # what rich markup left of a swallowed "[default: ...]"
    if command[0] in ("train", "evaluate", "predict"):
        assert ", ".join(ARCHITECTURES) in text
    if command == ("fetch",):
        assert ", ".join(SOURCES) in text


def test_help_choices_are_the_registries():
    from pipeline.core import names
    from pipeline.fetch.sources import SOURCES
    from pipeline.train.models import ARCHITECTURES

    assert names.ARCHITECTURES == tuple(ARCHITECTURES) and names.SOURCES == tuple(SOURCES)


def test_stage_summaries_keep_their_lines_and_one_number_format(tiny_project):
    fetched = run_cli("fetch", "--per-class", "600", cwd=tiny_project).stdout
    assert "│ success │ 1,200 │" in fetched
    prepared = run_cli("prepare", "--size", "8x10", cwd=tiny_project, env={"COLUMNS": "100"}).stdout
    assert prepared.splitlines()[0] == "data/prepared: input 8x10x3, classes vertical, horizontal"
    assert "│ train   │    900 │" in prepared
