"""Where tasks run: a local process pool (default) or a Dask cluster, behind one interface.

    with Engine("local") as engine:                                   # every core of this machine
        for result in engine.map(fn, tasks): ...
    with Engine("dask", scheduler="tcp://host:8786") as engine: ...   # a cluster

`fn` is a module-level function (pickled by reference) taking one task and returning a small
picklable result; results come back as tasks finish, in any order. `tasks` may be a lazy iterator:
at most `2 x workers` tasks are in flight at once, so a plan of a million shards is never all
submitted (nor held) at the same time. The same `fn` runs unchanged on both engines; with Dask,
every worker must import this package and see the output folder at the same path (a shared file
system). On the local engine a map of one task runs it in the calling process (no start-up to pay
for a small list). `fetch` runs its shards on it, `prepare` its groups of images (`section` names
the params, fetch or prepare, in error messages).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

from pipeline.core.config import between
from pipeline.core.errors import ConfigError

ENGINES = ("local", "dask")
# The engine params of a stage that maps tasks (`fetch.engine`, `prepare.engine`, with `scheduler`
# and `workers`): local = a process pool on this machine; dask = dask.distributed, at `scheduler`
# (tcp://HOST:8786) or, when it is "", a local cluster on 127.0.0.1.
EngineName = Literal["local", "dask"]
Workers = between(0, 1024, low_inclusive=True)  # local processes (and local Dask workers); 0 = one per core


def check_engine(section: str, engine: str, scheduler: str) -> None:
    """A scheduler must be a Dask address and goes with the dask engine only."""
    if scheduler and not scheduler.startswith(("tcp://", "tls://")):
        raise ConfigError(
            f"{section}.scheduler: {scheduler!r} is not a Dask scheduler address; expected tcp://HOST:PORT (or tls://)"
        )
    if scheduler and engine != "dask":
        raise ConfigError(
            f"{section}.scheduler: {scheduler!r} is for {section}.engine dask (got {engine!r}); "
            f"set {section}.engine: dask or leave the scheduler empty"
        )


CONNECT_TIMEOUT = 10  # seconds to reach a Dask scheduler


def default_workers(workers: int = 0) -> int:
    return workers or os.cpu_count() or 1


class Engine:
    """The processes (or the cluster connection) that run tasks, kept open across several maps: a
    fetch runs one map per wave and starts its workers once."""

    def __init__(
        self,
        engine: str = "local",
        scheduler: str = "",
        workers: int = 0,
        preload: Iterable[str] = (),
        section: str = "fetch",
    ):
        if engine not in ENGINES:
            raise ConfigError(f"{section}.engine: unknown value {engine!r}; valid choices: {', '.join(ENGINES)}")
        self.engine, self.scheduler, self.workers, self.preload, self.section = (
            engine,
            scheduler,
            workers,
            tuple(preload),
            section,
        )
        self._stack = ExitStack()
        self._pool: Any = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def _start(self, fn: Callable) -> Any:
        if self._pool is None:
            if self.engine == "local":
                # forkserver: workers start from a clean process that imported the task's modules
                # once, not from a fork of this one (which may hold threads and locks).
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([fn.__module__, *self.preload])
                workers = default_workers(self.workers)
                self._pool = ProcessPoolExecutor(
                    max_workers=workers, mp_context=context, initializer=_watch_parent, initargs=(os.getpid(),)
                )
                self._stack.callback(self._pool.shutdown, wait=True, cancel_futures=True)
            else:
                self._pool = self._stack.enter_context(_client(self.scheduler, self.workers, self.section))
        return self._pool

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        """`fn(task)` for every task, results as they finish. An exception in a task is raised here
        (the remaining tasks are cancelled). On the local engine a map of one task runs it in this
        process: other processes would add their start-up (about a second) and nothing else.
        `workers` is the number of local processes (0 = one per core); with Dask and a `scheduler`,
        the cluster decides. `preload`: modules the local processes import once, before they fork."""
        tasks = iter(tasks)
        if self.engine == "local":
            first, second = next(tasks, _END), next(tasks, _END)
            if first is _END:
                return
            if second is _END:
                yield fn(first)
                return
            tasks = itertools.chain([first, second], tasks)
        pool = self._start(fn)
        if self.engine == "local":
            limit = 2 * default_workers(self.workers)
            futures = _bounded(
                lambda task: pool.submit(fn, task),
                tasks,
                limit,
                lambda pending: wait(pending, return_when=FIRST_COMPLETED),
            )
            try:
                for future in futures:
                    yield future.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        else:
            from distributed import wait as dask_wait

            limit = 2 * max(1, sum(pool.nthreads().values()))

            def wait_any(pending: set) -> tuple[set, set]:
                result = dask_wait(list(pending), return_when="FIRST_COMPLETED")
                return set(result.done), set(result.not_done)

            for future in _bounded(lambda task: pool.submit(fn, task, pure=False), tasks, limit, wait_any):
                yield future.result()
                future.release()


def _bounded(
    submit: Callable[[Any], Any], tasks: Iterable[Any], limit: int, wait_any: Callable[[set], tuple[set, set]]
) -> Iterator[Any]:
    """Keep at most `limit` futures in flight; yield finished futures."""
    pending: set = set()
    source = iter(tasks)
    exhausted = False
    while True:
        while not exhausted and len(pending) < limit:
            task = next(source, _END)
            if task is _END:
                exhausted = True
            else:
                pending.add(submit(task))
        if not pending:
            return
        done, pending = wait_any(pending)
        yield from done


_END = object()


def _watch_parent(pid: int) -> None:
    """In each pool process: exit when the process that started the pool is gone (even `kill -9`),
    instead of finishing its shard as an orphan that a rerun would race with."""
    import threading
    import time

    parent = os.getppid()  # the fork server, which exits with the pool's owner

    def watch() -> None:
        while True:
            time.sleep(0.2)
            if os.getppid() != parent:
                os._exit(1)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _probe(scheduler: str, section: str) -> None:
    """Fail in a second, not after Dask's connect timeout, when nothing listens at a tcp:// address."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(scheduler)
    if parts.scheme != "tcp" or not parts.hostname:
        return
    try:
        socket.create_connection((parts.hostname, parts.port or 8786), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ConfigError(
            f"{section}.scheduler: cannot reach the Dask scheduler {scheduler!r} "
            f"({exc.strerror or type(exc).__name__}); start one with `dask scheduler` or use --engine local"
        ) from None


@contextmanager
def _client(scheduler: str, workers: int, section: str):
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ConfigError(
            f"{section}.engine: dask needs the `distributed` package (pip install 'dask[distributed]')"
        ) from None
    if scheduler:
        _probe(scheduler, section)
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"{section}.scheduler: cannot reach the Dask scheduler {scheduler!r} ({type(exc).__name__}); "
                "start one with `dask scheduler` or use --engine local"
            ) from None
        with client:
            yield client
    else:  # no scheduler given: a cluster of this machine's cores, on 127.0.0.1 only
        with (
            LocalCluster(
                n_workers=default_workers(workers),
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
                processes=True,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
