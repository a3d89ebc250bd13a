"""Run one measured call in a fresh process, so its time and peak RSS are its own."""

from __future__ import annotations

import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable


def _timed(fn: Callable, args: tuple) -> tuple[float, float, object]:
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, result


def measure(fn: Callable, *args) -> dict:
    """{"seconds", "peak_rss_mb", "result"} of fn(*args) run in a spawned child process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds, rss, result = pool.submit(_timed, fn, args).result()
    return {"seconds": seconds, "peak_rss_mb": rss, "result": result}
