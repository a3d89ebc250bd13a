"""pipeline.fetch.manifest: the manifest's row order and integer columns."""

from __future__ import annotations

import pandas as pd

from pipeline.core.dataset import COLUMNS, MANIFEST, read_manifest
from pipeline.fetch.manifest import write_manifest


def row(cls: str, url: str, path: str, status: str = "success", **fields) -> dict:
    return {"class": cls, "url": url, "path": path, "status": status, **fields}


def test_rows_sorted_by_class_then_url_then_path(tmp_path):
    rows = [
        row("b", "http://x/1", "b/1.jpg"),
        row("a", "http://x/2", "a/2.jpg"),
        row("a", "http://x/1", "a/z.jpg"),
        row("a", "http://x/1", "a/y.jpg", "duplicate", error_message="duplicate of a/z"),
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
        tmp_path,
        [row("a", "u1", "a/1.jpg", width=700), row("a", "u2", "", "failed_to_download", error_message="HTTP 404")],
        ["a"],
        "test",
    )
    frame = pd.read_csv(tmp_path / MANIFEST, dtype=str, keep_default_na=False)
    assert list(frame.columns) == COLUMNS
    assert list(frame["width"]) == ["700", ""]


def test_a_manifest_written_before_img2datasets_names_is_read_as_a_current_one(tmp_path):
    """Older datasets (`reason`, status `ok`, no `key`) need no new fetch: prepare reads them."""
    (tmp_path / MANIFEST).write_text(
        "url,path,class,split,status,reason,http_status,bytes,sha256,width,height,format,elapsed_ms\n"
        "http://x/1.jpg,a/1.jpg,a,train,ok,,200,10,ab,4,4,JPEG,3\n"
        "http://x/2.jpg,,a,,failed,HTTP 404,404,,,,,,2\n"
    )
    frame = read_manifest(tmp_path)
    assert list(frame.columns) == COLUMNS
    assert frame["status"].tolist() == ["success", "failed"] and frame["error_message"].tolist() == ["", "HTTP 404"]
    assert frame["key"].tolist() == ["", ""]
