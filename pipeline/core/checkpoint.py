"""Named points of progress, where a test can stop a run to kill it there.

The stages call `checkpoint(point)` each time they complete a unit of work: `fetch.item` (an item
stored by a source that is not a URL list), `fetch.shard` (a shard's record written), `prepare.group`
(a group of images prepared), `train.epoch` (an epoch's backup written), `evaluate.predicted` (the
model's predictions made, nothing written) and `evaluate.metrics` (the metrics written, not the
plots). Normally that is all it does. A kill -9 test sets `PIPELINE_PAUSE_AT=<point>:<n>` and
`PIPELINE_PAUSE_FILE=<path>`: the n-th time this process reaches `point`, it writes the file and holds still (for up to
PAUSE_SECONDS, then goes on), so the test kills it at that state, the same on a fast machine and a
slow one, instead of after a sleep that may come too early or too late.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

PAUSE_SECONDS = 300  # long enough for any test to kill; never a wait without end
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
        Path(os.environ["PIPELINE_PAUSE_FILE"]).write_text(f"{point} {count} {os.getpid()}\n")
        time.sleep(PAUSE_SECONDS)
