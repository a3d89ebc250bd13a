"""Run measured calls in fresh processes, so each one's time and peak RSS are its own."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from pipeline.train.loop import peak_rss_mb


def _timed(fn: Callable, args: tuple) -> tuple[float, float, object]:
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    return seconds, peak_rss_mb(), result


def measure(fn: Callable, *args) -> dict:
    """{"seconds", "peak_rss_mb", "result"} of fn(*args) run in a spawned child process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds, rss, result = pool.submit(_timed, fn, args).result()
    return {"seconds": seconds, "peak_rss_mb": rss, "result": result}


def best_of(
    rounds: int, contenders: dict[str, tuple], key: Callable[[dict], float] = lambda m: m["seconds"]
) -> dict[str, dict]:
    """Measure each contender (name -> (fn, *args)) `rounds` times, interleaved (A B A B ...), and
    keep each one's best run by `key` (lowest). On a shared machine noise only ever slows a run
    down, and interleaving spreads a slow spell over every contender instead of one."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for name, (fn, *args) in contenders.items():
            m = measure(fn, *args)
            if name not in best or key(m) < key(best[name]):
                best[name] = m
    return best
