"""Run one picklable function over many tasks on the local cores or on a Dask cluster.

`map_tasks(fn, tasks, engine, scheduler)` yields `fn(task)` for each task, in the order of `tasks`,
whichever engine ran them, so a caller's output never depends on the engine or the worker count.

- `local`: a `concurrent.futures.ProcessPoolExecutor` with one worker per core (at most one per task).
- `dask`: `distributed.Client(scheduler)` for a running cluster (`tcp://host:8786`), or, with no
  scheduler, a `LocalCluster` on 127.0.0.1 (one single-threaded worker process per core) started for
  the call and closed after it. Workers must see the same file system paths as the caller.

`fn` must be a top-level function (pickled by reference) and its tasks and results picklable; an
exception in a task is raised here, in the caller, once the results before it were yielded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from pipeline.core.errors import ConfigError

ENGINES = ("local", "dask")
CONNECT_TIMEOUT = "10s"  # a scheduler that does not answer within this is unreachable

T = TypeVar("T")


def check_engine(engine: str, scheduler: str | None = None) -> None:
    """Refuse an unknown engine, or a scheduler given to the local one, before any work starts."""
    if engine not in ENGINES:
        raise ConfigError(f"engine: unknown value {engine!r}; valid choices: {', '.join(ENGINES)}")
    if scheduler and engine != "dask":
        raise ConfigError(f"scheduler {scheduler!r} is for the dask engine; set the engine to dask or leave the scheduler empty")


def map_tasks(fn: Callable[[Any], T], tasks: Iterable[Any], engine: str = "local", scheduler: str | None = None) -> Iterator[T]:
    """`fn(task)` for each task, in task order, run on `engine` (see the module docstring)."""
    check_engine(engine, scheduler)
    tasks = list(tasks)
    if not tasks:
        return iter(())
    return _local(fn, tasks) if engine == "local" else _dask(fn, tasks, scheduler)


def _local(fn, tasks: list) -> Iterator:
    workers = max(1, min(os.cpu_count() or 1, len(tasks)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, tasks)


def _dask(fn, tasks: list, scheduler: str | None) -> Iterator:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("engine: dask needs the distributed package: pip install 'dask[distributed]'") from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"scheduler {scheduler!r} is unreachable ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else 'no answer'}); start it, or leave the scheduler empty for a local cluster") from None
    else:
        workers = max(1, min(os.cpu_count() or 1, len(tasks)))
        cluster = LocalCluster(host="127.0.0.1", n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster, set_as_default=False)
    try:
        futures = client.map(fn, tasks, pure=False)
        for future in futures:
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
