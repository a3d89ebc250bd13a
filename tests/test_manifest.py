"""pipeline.fetch.manifest: the manifest's row order and integer columns."""

from __future__ import annotations

import pandas as pd

from pipeline.core.dataset import COLUMNS, MANIFEST, read_manifest
from pipeline.fetch.manifest import write_manifest


def row(cls: str, url: str, path: str, status: str = "ok", **fields) -> dict:
    return {"class": cls, "url": url, "path": path, "status": status, **fields}


def test_rows_sorted_by_class_then_url_then_path(tmp_path):
    rows = [
        row("b", "http://x/1", "b/1.jpg"),
        row("a", "http://x/2", "a/2.jpg"),
        row("a", "http://x/1", "a/z.jpg"),
        row("a", "http://x/1", "a/y.jpg", "duplicate", reason="duplicate of a/z"),
        row("a", "", "a/0.jpg"),
    ]
    expected = [
        ("a", "", "a/0.jpg"),
        ("a", "http://x/1", "a/y.jpg"),
        ("a", "http://x/1", "a/z.jpg"),
        ("a", "http://x/2", "a/2.jpg"),
        ("b", "http://x/1", "b/1.jpg"),
    ]
    for order in (rows, rows[::-1]):
        write_manifest(tmp_path, order, ["a", "b"], "test")
        frame = read_manifest(tmp_path)
        assert list(zip(frame["class"], frame["url"], frame["path"])) == expected
    first = (tmp_path / MANIFEST).read_bytes()
    write_manifest(tmp_path, rows[1:] + rows[:1], ["a", "b"], "test")
    assert (tmp_path / MANIFEST).read_bytes() == first  # any finishing order, the same bytes


def test_columns_first_in_order_and_integers_stay_integers(tmp_path):
    write_manifest(
        tmp_path, [row("a", "u1", "a/1.jpg", width=700), row("a", "u2", "", "failed", reason="HTTP 404")], ["a"], "test"
    )
    frame = pd.read_csv(tmp_path / MANIFEST, dtype=str, keep_default_na=False)
    assert list(frame.columns) == COLUMNS
    assert list(frame["width"]) == ["700", ""]
