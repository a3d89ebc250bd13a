"""Survey image shapes from file headers (no pixel decoding), as seed 000 did to choose its input size.

Any layout of a fetched dataset, through pipeline.prepare.items: every file of a folder, or the
`success` items of a shard dataset's final manifest, read from their tars one shard at a time.
"""

from __future__ import annotations

import gc
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import MAX_FILE_BYTES
from pipeline.core.console import bar
from pipeline.core.errors import DataError
from pipeline.core.files import write_json, write_records, write_text
from pipeline.prepare.items import list_items


@dataclass(frozen=True)
class Survey:
    images: int  # headers read
    unreadable: int
    most_common_shape: list[int]  # [height, width]; [] when no image was readable
    shapes: list[dict]  # {height, width, count}, most frequent first


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector around a loop that makes many small acyclic objects
    (paths, shapes): those trigger full collections that walk every object the imports made, about
    40 ms each, a third of the time of surveying 4,000 files (benchmarks/scaling.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def list_files(root: Path) -> list[Path]:
    """Every file a survey of the folder `root` reads: its regular files except hidden ones and the
    dataset's own sidecars, sorted (symbolic links, FIFOs and devices are left out)."""
    return [root / path for path in list_items(root, every_file=True).frame["path"]]


def summarise(sizes: list[tuple[int, int] | None]) -> Survey:
    counts = Counter(size for size in sizes if size is not None)
    # Most frequent first; ties broken by the larger then the wider shape so the order is stable.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], -item[0][0], -item[0][1]))
    shapes = [{"height": h, "width": w, "count": n} for (h, w), n in ranked]
    most_common = [shapes[0]["height"], shapes[0]["width"]] if shapes else []
    return Survey(sum(counts.values()), len(sizes) - sum(counts.values()), most_common, shapes)


def _sampled(n: int, sample: int, seed: int) -> list[int]:
    """Every position, or a seeded random `sample` of them in order."""
    if 0 < sample < n:
        return sorted(np.random.default_rng(seed).choice(n, size=sample, replace=False).tolist())
    return list(range(n))


@gc_paused()
def survey_shapes(root: Path, sample: int = 0, seed: int = 0) -> Survey:
    """Read the header of every image of the dataset at `root`, or of a seeded random `sample` of them.

    Serial on purpose: a header read costs ~10-20 us, less than handing the item to a thread or a
    process (benchmarks/survey.py)."""
    items = list_items(root, every_file=True)
    frame = items.frame.iloc[_sampled(len(items.frame), sample, seed)]
    sizes: list[tuple[int, int] | None] = []
    with bar("Reading headers", len(frame)) as step:
        for group, rows in items.groups(frame):
            sizes += [
                shape
                for _, shape in sorted(items.reader.shapes(group, rows["member"].tolist(), MAX_FILE_BYTES), key=_first)
            ]
            step(len(rows))
    survey = summarise(sizes)
    if not survey.images:
        what, kind = ("in the shards of", "items") if items.sharded else ("under", "files")
        raise DataError(f"no readable image {what} {root} ({len(frame)} {kind}, none an image): nothing to survey")
    return survey


def _first(pair: tuple) -> int:
    return pair[0]


TOP_SHAPES = 15  # bars of the shape histogram plot; the rest are summed into one "other" bar


def shape_records(survey: dict, top: int = TOP_SHAPES) -> list[dict]:
    """The `top` most common shapes as bars, and one "other" bar for the rest (the survey lists them
    most common first): the DVC plot data `plots/shapes.json`, also drawn on the summary page."""
    shapes = survey.get("shapes", [])
    records = [{"shape": f"{s['height']}x{s['width']}", "count": s["count"]} for s in shapes[:top]]
    rest = shapes[top:]
    if rest:
        records.append({"shape": f"other ({len(rest)} shapes)", "count": sum(s["count"] for s in rest)})
    return records


def write_survey(
    survey: Survey, json_path: Path | None = None, csv_path: Path | None = None, plot_path: Path | None = None
) -> None:
    """The survey JSON, the full shape histogram as CSV and the plot data, each only where a path is given."""
    if json_path is not None:
        write_json(json_path, asdict(survey))
    if csv_path is not None:
        lines = ["height,width,count"] + [f"{s['height']},{s['width']},{s['count']}" for s in survey.shapes]
        write_text(csv_path, "\n".join(lines) + "\n")
    if plot_path is not None:
        write_records(plot_path, shape_records(asdict(survey)))


def run(
    root: Path,
    sample: int,
    seed: int,
    json_out: Path | None = None,
    csv_out: Path | None = None,
    plot_out: Path | None = None,
) -> Survey:
    """The survey stage: survey `root`; write the survey JSON, the shape histogram CSV and its plot
    data where asked (nothing by default: a survey of some other folder must not touch the
    pipeline's own outputs)."""
    survey = survey_shapes(root, sample, seed)
    write_survey(survey, json_out, csv_out, plot_out)
    return survey
