"""Plot data (checked against independent computations), the prediction grid, and the summary report."""

import json
import shutil

import cv2
import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from pipeline.prepare.survey import shape_records
from pipeline.report.evaluation import Evaluation
from pipeline.report.plots import (
    confusion_records,
    predictions_figure,
    roc_records,
    sample_rows,
    threshold_records,
    worst_mistakes,
    write_plots,
)
from pipeline.report.report import write_report
from tests.conftest import run_cli


def binary_evaluation(labels, prob, n_thresholds=10, classes=("dog", "cat")):
    prob = np.asarray(prob, dtype=np.float64)
    return Evaluation({}, list(classes), np.asarray(labels), np.stack([1 - prob, prob], 1), n_thresholds)


def trapezoid_auc(records):
    fpr = np.array([r["fpr"] for r in records])
    tpr = np.array([r["tpr"] for r in records])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def mw_auc(truth, score):
    pos, neg = score[truth == 1], score[truth == 0]
    return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))


@pytest.fixture
def noisy():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 300)
    prob = np.clip(0.35 * labels + 0.65 * rng.random(300), 0, 1)
    return labels, prob


def test_threshold_records_are_the_accuracy_of_each_cut(noisy):
    labels, prob = noisy
    records = threshold_records(binary_evaluation(labels, prob, 20))
    assert [r["threshold"] for r in records] == pytest.approx(np.linspace(0.025, 0.975, 20))
    for r in records:
        assert r["accuracy"] == pytest.approx(np.mean((prob > r["threshold"]) == (labels == 1)), abs=1e-6)


def test_roc_records_trace_the_curve_whose_area_is_the_rank_statistic(noisy):
    labels, prob = noisy
    records = roc_records(binary_evaluation(labels, prob))
    assert (records[0]["fpr"], records[0]["tpr"]) == (0.0, 0.0) and (records[-1]["fpr"], records[-1]["tpr"]) == (
        1.0,
        1.0,
    )
    assert all(a["fpr"] <= b["fpr"] and a["tpr"] <= b["tpr"] for a, b in zip(records, records[1:]))
    assert trapezoid_auc(records) == pytest.approx(mw_auc(labels, prob), abs=1e-5)


def test_one_class_roc_is_the_chance_diagonal():
    records = roc_records(binary_evaluation([1, 1, 1], [0.2, 0.5, 0.9]))
    assert records == [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 1.0, "tpr": 1.0}]
    json.dumps(records, allow_nan=False)


def test_multiclass_curves_are_one_vs_rest_micro_averaged():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 120)
    logits = rng.normal(size=(120, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ev = Evaluation({}, ["a", "b", "c"], labels, probs, 10)
    truth, score = np.eye(3)[labels].ravel(), probs.ravel()
    assert trapezoid_auc(roc_records(ev)) == pytest.approx(mw_auc(truth, score), abs=1e-5)
    for r in threshold_records(ev):
        assert r["accuracy"] == pytest.approx(np.mean((score > r["threshold"]) == (truth == 1)), abs=1e-6)


def test_confusion_records_one_per_image_with_class_names():
    labels = np.array([0, 0, 1, 1, 1])
    ev = binary_evaluation(labels, [0.2, 0.7, 0.9, 0.4, 0.6])
    records = confusion_records(ev)
    assert records == [
        {"actual": "dog", "predicted": "dog"},
        {"actual": "dog", "predicted": "cat"},
        {"actual": "cat", "predicted": "cat"},
        {"actual": "cat", "predicted": "dog"},
        {"actual": "cat", "predicted": "cat"},
    ]


def test_worst_mistakes_most_confident_first_and_sample_spans_the_split():
    labels = np.array([0, 0, 1, 1, 1, 0])
    ev = binary_evaluation(labels, [0.9, 0.2, 0.3, 0.05, 0.8, 0.7])
    # Wrong: row 0 (cat 0.9), row 2 (dog 0.7), row 3 (dog 0.95), row 5 (cat 0.7): ties keep row order.
    assert worst_mistakes(ev) == [3, 0, 2, 5]
    assert worst_mistakes(binary_evaluation([0, 1], [0.1, 0.9])) == []
    assert sample_rows(100) == [0, 14, 28, 42, 57, 71, 85, 99]
    assert sample_rows(3) == [0, 1, 2] and sample_rows(0) == []


def test_prediction_grid_titles_blue_when_right_red_when_wrong():
    labels = np.array([0, 1] * 6)
    prob = np.array([0.1, 0.8, 0.7, 0.9, 0.2, 0.3, 0.4, 0.6, 0.05, 0.95, 0.65, 0.35])
    ev = binary_evaluation(labels, prob)
    images = np.full((12, 10, 14, 3), 128, np.uint8)
    fig = predictions_figure(ev, images)
    top, bottom = fig.subfigs
    rows = sample_rows(12)
    titles = [ax.title for ax in top.axes if ax.images]
    assert len(titles) == 8 == len(rows)
    for title, row in zip(titles, rows):
        right = (prob[row] > 0.5) == (labels[row] == 1)
        assert title.get_color() == ("blue" if right else "red")
        assert title.get_text().split()[0] == ("cat" if prob[row] > 0.5 else "dog")
    mistakes = [ax.title for ax in bottom.axes if ax.images]
    assert len(mistakes) == len(worst_mistakes(ev)) == 4
    assert all(t.get_color() == "red" and "true:" in t.get_text() for t in mistakes)
    assert "4 of 12 wrong" in bottom.get_suptitle()


def test_predictions_png_is_deterministic_and_has_blue_and_red_labels(tmp_path):
    labels = np.array([0, 1] * 6)
    ev = binary_evaluation(labels, [0.1, 0.8, 0.7, 0.9, 0.2, 0.3, 0.4, 0.6, 0.05, 0.95, 0.65, 0.35])
    grey = np.full((12, 10, 14, 1), 128, np.uint8)  # grayscale input: drawn with a grey colour map
    write_plots(ev, grey, tmp_path / "a")
    write_plots(ev, grey, tmp_path / "b")
    for name in ("thresholds.json", "roc.json", "confusion.json", "predictions.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    img = cv2.imread(str(tmp_path / "a/predictions.png"))  # BGR
    b, g, r = (img[..., i].astype(int) for i in range(3))
    assert img.shape[:2] == (950, 1000)
    assert np.sum((b > 200) & (r < 80) & (g < 80)) > 50  # blue text
    assert np.sum((r > 200) & (b < 80) & (g < 80)) > 50  # red text
    assert np.sum((b == 128) & (g == 128) & (r == 128)) > 10_000  # the grey images themselves


def test_evaluate_writes_consistent_plots_for_each_arch(evaluated_project, tmp_path):
    for arch in ("mlp", "cnn"):
        plots = evaluated_project / "plots" / arch
        metrics = json.loads((evaluated_project / f"metrics/{arch}.json").read_text())
        sweep = json.loads((plots / "thresholds.json").read_text())
        best = max(sweep, key=lambda r: r["accuracy"])
        assert len(sweep) == 10
        assert (best["threshold"], best["accuracy"]) == (metrics["best_threshold"], metrics["best_threshold_accuracy"])
        confusion = json.loads((plots / "confusion.json").read_text())
        assert len(confusion) == 12 and {r["actual"] for r in confusion} == {"vertical", "horizontal"}
        assert np.mean([r["actual"] == r["predicted"] for r in confusion]) == pytest.approx(metrics["accuracy"])
        assert trapezoid_auc(json.loads((plots / "roc.json").read_text())) == pytest.approx(
            metrics["roc_auc"], abs=1e-5
        )
        png = cv2.imread(str(plots / "predictions.png"))
        assert png is not None and png.shape[:2] == (950, 1000) and png.std() > 20

    # Same model and data -> the same bytes for every plot file.
    again = tmp_path / "again"
    printed = run_cli(
        "evaluate", "--arch", "cnn", "--out", str(tmp_path / "cnn.json"), "--plots", str(again), cwd=evaluated_project
    ).stdout
    assert f"params={json.loads((tmp_path / 'cnn.json').read_text())['params']:,}," in printed  # not 1.089e+07
    for path in (evaluated_project / "plots/cnn").iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    assert (tmp_path / "cnn.json").read_bytes() == (evaluated_project / "metrics/cnn.json").read_bytes()
    assert (tmp_path / "cnn.dataset.json").read_bytes() == (evaluated_project / "metrics/cnn.dataset.json").read_bytes()


def test_shape_records_top_shapes_then_other():
    survey = {
        "shapes": [
            {"height": 375, "width": 500, "count": 9},
            {"height": 500, "width": 375, "count": 4},
            {"height": 10, "width": 10, "count": 1},
            {"height": 20, "width": 10, "count": 1},
        ]
    }
    assert shape_records(survey, 2) == [
        {"shape": "375x500", "count": 9},
        {"shape": "500x375", "count": 4},
        {"shape": "other (2 shapes)", "count": 2},
    ]
    assert shape_records(survey, 10)[-1] == {"shape": "20x10", "count": 1}
    assert shape_records({"shapes": []}) == []


def test_report_links_every_plot_and_includes_the_survey(evaluated_project, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(evaluated_project / "metrics", project / "metrics")
    shutil.copytree(evaluated_project / "plots", project / "plots")
    shutil.copy(evaluated_project / "reports/survey.json", tmp_path / "survey.json")
    report = write_report(
        project / "metrics", tmp_path / "survey.json", project / "plots", project / "reports/summary.md", "mse"
    )
    text = report.summary.read_text()
    survey = json.loads((tmp_path / "survey.json").read_text())
    assert "x".join(map(str, survey["most_common_shape"])) in text
    assert f"{survey['images']} images read" in text
    for arch in ("mlp", "cnn"):
        assert f"\n| {arch} " in text
        for name in ("predictions.png", "curves.json", "thresholds.json", "roc.json", "confusion.json"):
            link = f"../plots/{arch}/{name}"
            assert f"({link})" in text and (project / "reports" / link).resolve().exists()
    mse = {arch: json.loads((project / f"metrics/{arch}.json").read_text())["mse"] for arch in ("mlp", "cnn")}
    assert f"**{min(mse, key=mse.get)}**" in text  # best by mse, lower is better
    assert "[summary.html](summary.html)" in text and report.html == project / "reports/summary.html"
    assert "train_seconds" not in text and "peak_rss_mb" not in text  # run-to-run figures stay out of tracked files
    first = report.summary.read_bytes(), report.html.read_bytes()
    write_report(
        project / "metrics", tmp_path / "survey.json", project / "plots", project / "reports/summary.md", "mse"
    )
    assert (report.summary.read_bytes(), report.html.read_bytes()) == first


def test_committed_dvc_templates_are_the_generated_ones():
    from pipeline.report.charts import TEMPLATES_DIR, dvc_templates
    from tests.conftest import ROOT

    for name, spec in dvc_templates().items():
        committed = json.loads((ROOT / TEMPLATES_DIR / f"{name}.json").read_text())
        assert committed == spec, f"{name}: regenerate with `python -m pipeline.report.charts`"


def test_curve_records_are_the_history_in_long_form():
    from pipeline.report.plots import curve_records

    history = (
        {"epoch": 1, "accuracy": 0.5, "loss": 0.25, "val_accuracy": 0.4, "val_loss": 0.3},
        {"epoch": 2, "accuracy": 0.75, "loss": 0.125, "val_accuracy": 0.6, "val_loss": 0.2},
    )
    records = curve_records(history)
    assert len(records) == 8 and records[:2] == [
        {"epoch": 1, "metric": "loss", "split": "train", "value": 0.25},
        {"epoch": 1, "metric": "loss", "split": "validation", "value": 0.3},
    ]
    assert {r["value"] for r in records if r["metric"] == "accuracy" and r["split"] == "validation"} == {0.4, 0.6}
    assert curve_records(({"epoch": 1, "loss": 0.5, "accuracy": 0.5},)) == [
        {"epoch": 1, "metric": "loss", "split": "train", "value": 0.5},
        {"epoch": 1, "metric": "accuracy", "split": "train", "value": 0.5},
    ]  # no validation split


def test_confusion_chart_counts_every_cell_and_writes_the_counts():
    from pipeline.report.charts import confusion, confusion_counts

    records = [{"actual": "a", "predicted": "a"}] * 3 + [{"actual": "a", "predicted": "b"}]
    cells = confusion_counts(records, ["a", "b"])
    assert cells == [
        {"actual": "a", "predicted": "a", "count": 3},
        {"actual": "a", "predicted": "b", "count": 1},
        {"actual": "b", "predicted": "a", "count": 0},
        {"actual": "b", "predicted": "b", "count": 0},
    ]
    text_layer = confusion(cells, ["a", "b"])["layer"][1]
    assert text_layer["mark"]["type"] == "text" and text_layer["encoding"]["text"]["field"] == "count"
