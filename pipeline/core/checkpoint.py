"""Named points of progress, where a test can stop a run to kill it there.

The stages call `checkpoint(point)` each time they complete a unit of work: `fetch.item` (an item
stored by a source that is not a URL list), `fetch.shard` (a shard's record written), `prepare.group`
(a group of images prepared), `train.epoch` (an epoch's backup written), `evaluate.predicted` (the
model's predictions made, nothing written), `evaluate.metrics` (the metrics written, not the
plots) and `dask.done` (a Dask task finished, its result still on its worker). Normally that is all
it does. A kill -9 test sets `PIPELINE_PAUSE_AT=<point>:<n>` and `PIPELINE_PAUSE_FILE=<path>`: the
n-th time this process reaches `point`, it writes the file and holds still until the file is
removed (or PAUSE_SECONDS have passed), so the test kills it (or something it depends on) at that
state, the same on a fast machine and a slow one, instead of after a sleep that may come too early
or too late.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

PAUSE_SECONDS = 300  # long enough for any test to act; never a wait without end
_AT = os.environ.get("PIPELINE_PAUSE_AT", "")
_reached: Counter = Counter()
_lock = threading.Lock()


def checkpoint(point: str) -> None:
    """`point` was reached once more (see the module docstring)."""
    if not _AT:
        return
    name, _, count = _AT.rpartition(":")
    if name != point:
        return
    with _lock:
        _reached[point] += 1
        hit = _reached[point] == int(count)
    if hit:
        pause = Path(os.environ["PIPELINE_PAUSE_FILE"])
        pause.write_text(f"{point} {count} {os.getpid()}\n")
        deadline = time.monotonic() + PAUSE_SECONDS
        while pause.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
