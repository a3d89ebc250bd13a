"""Writing a fetched dataset's manifest (format: pipeline.core.dataset) and storing its images.

Rows are sorted (manifest.csv) or kept in candidate order (parquet), so the files are
byte-identical for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.dataset import COLUMNS, DATASET, MANIFEST, NUMERIC, SUMMARY
from pipeline.core.files import printable, write_atomic, write_json
from pipeline.core.images import EXTENSIONS, ImageInfo, hex_hash, validate

# The columns of a parquet manifest: counts as int64 (null where there is none), the rest strings.
SCHEMA = pa.schema([(name, pa.int64() if name in NUMERIC else pa.string()) for name in COLUMNS])


@dataclass(frozen=True)
class FetchResult:
    out: Path
    classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # rows by status
    reasons: dict[str, int] = field(default_factory=dict)  # rows by reason, for rows not `success`
    warnings: list[str] = field(default_factory=list)  # e.g. a class short of its requested count


def reason_kind(reason: str) -> str:
    """The kind of a reason, for counting: "truncated: ... (288 bytes not processed)" -> "truncated"."""
    return "duplicate" if reason.startswith("duplicate of") else reason.split(":", 1)[0]


def store_image(out: Path, cls: str, data: bytes, digest: str, max_pixels: int, min_side: int) -> dict:
    """Validate `data` and write it once to `<cls>/<sha256>.<ext>`: the manifest fields of the stored
    image. Raises ImageError for data that is not a usable image. Shared by every source that stores
    bytes it did not make (archives, folders)."""
    info = validate(data, max_pixels, min_side)
    rel = write_image(out, cls, data, digest, info)
    shape = {"width": info.width, "height": info.height, "format": info.format}
    return {"path": rel, "dhash": hex_hash(info.dhash), **shape}


def write_image(out: Path, cls: str, data: bytes, digest: str, info: ImageInfo) -> str:
    """Write validated image bytes once to `<cls>/<sha256>.<ext>`; the path relative to `out`."""
    rel = f"{cls}/{digest}.{EXTENSIONS[info.format]}"
    dest = out / rel
    if not (dest.is_file() and dest.stat().st_size == len(data)):  # a rerun finds the same content-named file
        write_atomic(dest, data)
    return rel


def write_manifest(
    out: Path, rows: list[dict] | pd.DataFrame, classes: list[str], source: str, warnings: list[str] | None = None
) -> FetchResult:
    """Write manifest.csv, summary.json and dataset.json (class order: label i = classes[i]).

    Rows are sorted by class, url and path so the file is byte-identical whatever order items
    finished in.
    """
    # file names that are not UTF-8, escaped (before pandas: its Arrow-backed strings refuse them)
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    frame = pd.DataFrame([{k: printable(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows])
    for column in COLUMNS:
        if column not in frame:
            frame[column] = ""
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    frame = frame.astype({c: str for c in ("url", "path", "class", "split")}).sort_values(
        ["class", "url", "path"], kind="stable"
    )
    for column in NUMERIC:  # integers stay integers when some rows have none (no "700.0")
        frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce").astype("Int64")
    write_atomic(out / MANIFEST, frame.to_csv(index=False, lineterminator="\n").encode())
    write_json(out / DATASET, {"source": source, "classes": classes})
    counts = {k: int(v) for k, v in frame["status"].value_counts().sort_index().items()}
    not_ok = frame[frame["status"] != "success"]
    reasons = {k: int(v) for k, v in not_ok["error_message"].map(reason_kind).value_counts().sort_index().items()}
    summary = {"counts": counts, "reasons": reasons, "warnings": warnings or []}
    write_json(out / SUMMARY, summary)
    return FetchResult(out, classes, counts, reasons, warnings or [])


def rows_table(rows: list[dict]) -> pa.Table:
    """Manifest rows as an Arrow table with exactly COLUMNS (ints stay ints, blanks are nulls)."""
    columns = {}
    for name in COLUMNS:
        values = [row.get(name, "") for row in rows]
        if name in NUMERIC:
            values = [None if value in ("", None) else int(value) for value in values]
        else:
            values = ["" if value is None else str(value) for value in values]
        columns[name] = pa.array(values, SCHEMA.field(name).type)
    return pa.table(columns, schema=SCHEMA)


def write_parquet(path: Path, rows: pa.Table | pd.DataFrame) -> None:
    """A parquet manifest (zstd), atomically: a table, or a frame with exactly COLUMNS."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    write_atomic(path, buf.getvalue().to_pybytes())
