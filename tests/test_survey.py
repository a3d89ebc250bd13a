"""pipeline.prepare.survey: image shapes from file headers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import DataError, InputError
from pipeline.prepare.survey import list_files, summarise, survey_shapes, write_survey


def save(path, h, w, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path, fmt)


@pytest.fixture
def folder(tmp_path):
    """6 x 40x60, 3 x 60x40, 1 x 30x30 (PNG), a text file, an empty file, hidden files, sidecars."""
    root = tmp_path / "raw"
    for i in range(6):
        save(root / "a" / f"wide{i}.jpg", 40, 60)
    for i in range(3):
        save(root / "b" / f"tall{i}.jpg", 60, 40)
    save(root / "b" / "square.png", 30, 30, "PNG")
    (root / "a" / "notes.jpg").write_text("definitely not an image")
    (root / "b" / "empty.jpg").write_bytes(b"")
    save(root / "a" / ".hidden.jpg", 99, 99)
    save(root / ".cache" / "x.jpg", 99, 99)
    (root / "manifest.csv").write_text("path,class\n")
    (root / "dataset.json").write_text('{"classes": []}\n')
    return root


def test_counts_and_shapes(folder):
    survey = survey_shapes(folder)
    assert survey.images == 10
    assert survey.unreadable == 2
    assert survey.most_common_shape == [40, 60]
    assert survey.shapes == [
        {"height": 40, "width": 60, "count": 6},
        {"height": 60, "width": 40, "count": 3},
        {"height": 30, "width": 30, "count": 1},
    ]


def test_hidden_files_and_sidecars_ignored(folder):
    names = {path.name for path in list_files(folder)}
    assert ".hidden.jpg" not in names and "x.jpg" not in names
    assert "manifest.csv" not in names and "dataset.json" not in names
    assert len(names) == 12  # 10 images, notes.jpg, empty.jpg
    assert all(s["height"] != 99 for s in survey_shapes(folder).shapes)


def test_ties_broken_by_larger_then_wider_shape(tmp_path):
    # Listed (and so counted) first: the smaller shapes. Only the tie-break rule puts the larger
    # height first, and at the same height the wider shape first.
    for i in range(2):
        save(tmp_path / f"a{i}.jpg", 20, 30)
        save(tmp_path / f"b{i}.jpg", 20, 40)
        save(tmp_path / f"c{i}.jpg", 30, 20)
    survey = survey_shapes(tmp_path)
    assert [(s["height"], s["width"]) for s in survey.shapes] == [(30, 20), (20, 40), (20, 30)]
    assert survey.most_common_shape == [30, 20]


@pytest.mark.parametrize("order", [1, -1])
def test_tie_break_does_not_depend_on_input_order(order):
    shapes = [(20, 30), (20, 40), (30, 20), (20, 30), (20, 40), (30, 20), (10, 10)]
    survey = summarise(shapes[::order])
    assert [(s["height"], s["width"]) for s in survey.shapes] == [(30, 20), (20, 40), (20, 30), (10, 10)]


@pytest.fixture
def distinct(tmp_path):
    """12 images, each a different shape, so a survey's shapes reveal which files were read."""
    root = tmp_path / "distinct"
    for i in range(12):
        save(root / f"{i:02d}.png", 10 + i, 20, "PNG")
    return root


@pytest.mark.parametrize("n", [1, 5, 11])
def test_sample_reads_exactly_n(distinct, n):
    survey = survey_shapes(distinct, sample=n, seed=0)
    assert survey.images + survey.unreadable == n
    assert len(survey.shapes) == n


def test_sample_is_deterministic_per_seed(distinct):
    def chosen(seed):
        return sorted(s["height"] for s in survey_shapes(distinct, sample=4, seed=seed).shapes)

    assert chosen(0) == chosen(0)
    assert chosen(3) == chosen(3)
    assert len({tuple(chosen(seed)) for seed in range(5)}) > 1


def test_sample_zero_or_too_large_reads_all(distinct):
    assert survey_shapes(distinct, sample=0).images == 12
    assert survey_shapes(distinct, sample=12).images == 12
    assert survey_shapes(distinct, sample=50).images == 12


def test_sample_counts_unreadable(folder):
    survey = survey_shapes(folder, sample=12, seed=0)  # every listed file
    assert (survey.images, survey.unreadable) == (10, 2)


def test_a_folder_without_images_is_an_error(tmp_path):
    """Issue 10, case 20: nothing to survey is not a success."""
    with pytest.raises(DataError, match="no readable image"):
        survey_shapes(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="1 files, none an image"):
        survey_shapes(tmp_path)
    assert summarise([]).most_common_shape == []


def test_write_survey(folder, tmp_path):
    survey = survey_shapes(folder)
    json_path, csv_path = tmp_path / "out" / "survey.json", tmp_path / "out" / "nested" / "shapes.csv"
    write_survey(survey, json_path, csv_path)
    data = json.loads(json_path.read_text())
    assert set(data) == {"images", "unreadable", "most_common_shape", "shapes"}
    assert data["images"] == 10 and data["unreadable"] == 2
    assert data["most_common_shape"] == [40, 60]
    assert data["shapes"][0] == {"height": 40, "width": 60, "count": 6}
    assert csv_path.read_text().splitlines() == ["height,width,count", "40,60,6", "60,40,3", "30,30,1"]


def test_write_survey_json_only(folder, tmp_path):
    json_path = tmp_path / "survey.json"
    write_survey(survey_shapes(folder), json_path)
    assert json.loads(json_path.read_text())["images"] == 10
    assert not list(tmp_path.glob("*.csv"))


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        survey_shapes(tmp_path / "nope")
    file = tmp_path / "file.jpg"
    save(file, 10, 10)
    with pytest.raises(InputError):
        survey_shapes(file)
