"""Where tasks run: a local process pool (default) or a Dask cluster, behind one interface.

    with Engine(cfg, preload) as engine:    # cfg: a stage's params (EngineParams: fetch, prepare)
        for result in engine.map(fn, tasks): ...

`fn` is a module-level function (pickled by reference) taking one task and returning a small
picklable result; results come back as tasks finish, in any order. `tasks` may be a lazy iterator:
at most `2 x workers` tasks are in flight at once, so a plan of a million shards is never all
submitted (nor held) at the same time. The same `fn` runs unchanged on both engines; with Dask,
every worker must import this package and see the output folder at the same path (a shared file
system). On the local engine a map of one task runs it in the calling process (no start-up to pay
for a small list). `fetch` runs its shards on it, `prepare` its groups of images.

Nothing waits without end. Reaching a scheduler includes Dask's handshake, within
`<stage>.connect_timeout` seconds (an address that answers but is no Dask scheduler is one error line). While a
cluster has no worker (none started yet, or all of them lost), the run says so on the terminal and
fails with one line after `<stage>.wait_for_workers` seconds; a task whose worker died runs again
on another (Dask's own rule, up to its `allowed-failures`). A local worker process that dies (out of
memory, killed) is one error line too. Everything a finished task wrote stays: a rerun resumes.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from pipeline.core.checkpoint import checkpoint
from pipeline.core.config import Seconds, Section, between
from pipeline.core.console import console, report_to, shared_counter
from pipeline.core.errors import ConfigError, PipelineError

POLL = 1.0  # seconds between looks at a cluster's workers while waiting for a task


class EngineError(PipelineError):
    """The engine could not run the tasks: no worker joined in time, a worker process died."""


class EngineParams(Section):
    """Where a stage's tasks run (`<stage>.engine`, `scheduler`, `workers`, `wait_for_workers`):
    local = a process pool on this machine; dask = dask.distributed, at `scheduler`
    (tcp://HOST:8786) or, when it is "", a local cluster on 127.0.0.1."""

    NAME: ClassVar[str] = "engine"  # the stage's section, in messages (each stage's params set it)

    engine: Literal["local", "dask"] = "local"
    scheduler: str = ""
    workers: between(0, 1024, low_inclusive=True) = 0  # local processes (and local Dask workers); 0 = one per core
    wait_for_workers: Seconds = 120.0  # how long a cluster may have no worker before the run fails
    connect_timeout: Seconds = 10.0  # to reach a scheduler and complete Dask's handshake

    @model_validator(mode="after")
    def _scheduler(self) -> EngineParams:
        """A scheduler must be a Dask address and goes with the dask engine only."""
        section, scheduler = self.NAME, self.scheduler
        if scheduler and not scheduler.startswith(("tcp://", "tls://")):
            raise ConfigError(
                f"{section}.scheduler: {scheduler!r} is not a Dask scheduler address; "
                "expected tcp://HOST:PORT (or tls://)"
            )
        if scheduler and self.engine != "dask":
            raise ConfigError(
                f"{section}.scheduler: {scheduler!r} is for {section}.engine dask (got {self.engine!r}); "
                f"set {section}.engine: dask or leave the scheduler empty"
            )
        return self


def default_workers(workers: int = 0) -> int:
    return workers or os.cpu_count() or 1


class Engine:
    """The processes (or the cluster connection) that run tasks, kept open across several maps: a
    fetch runs one map per wave and starts its workers once."""

    def __init__(self, params: EngineParams, preload: Iterable[str] = ()):
        self.params, self.section, self.preload = params, params.NAME, tuple(preload)
        self._stack = ExitStack()
        self._pool: Any = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def _start(self, fn: Callable) -> Any:
        if self._pool is None:
            if self.params.engine == "local":
                # forkserver: workers start from a clean process that imported the task's modules
                # once, not from a fork of this one (which may hold threads and locks).
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([fn.__module__, *self.preload])
                self._pool = ProcessPoolExecutor(
                    max_workers=default_workers(self.params.workers),
                    mp_context=context,
                    initializer=_start_worker,
                    initargs=(os.getpid(), shared_counter(context)),
                )
                self._stack.callback(self._pool.shutdown, wait=True, cancel_futures=True)
            else:
                self._pool = self._stack.enter_context(_client(self.params))
        return self._pool

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        """`fn(task)` for every task, results as they finish. An exception in a task is raised here
        (the remaining tasks are cancelled). On the local engine a map of one task runs it in this
        process: other processes would add their start-up (about a second) and nothing else."""
        tasks = iter(tasks)
        if self.params.engine == "local":
            first, second = next(tasks, _END), next(tasks, _END)
            if first is _END:
                return
            if second is _END:
                yield fn(first)
                return
            yield from self._local(fn, itertools.chain([first, second], tasks))
        else:
            yield from self._dask(fn, tasks)

    def _local(self, fn: Callable[[Any], Any], tasks: Iterator[Any]) -> Iterator[Any]:
        pool = self._start(fn)
        futures = _bounded(
            lambda task: pool.submit(fn, task),
            tasks,
            2 * default_workers(self.params.workers),
            lambda pending: wait(pending, return_when=FIRST_COMPLETED),
        )
        try:
            for future in futures:
                yield future.result()
        except BrokenProcessPool:
            raise EngineError(
                f"a worker process of {self.section}.engine local died (killed, or out of memory?); "
                "what finished is kept: rerun to go on, with fewer workers if memory is short"
            ) from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def _dask(self, fn: Callable[[Any], Any], tasks: Iterator[Any]) -> Iterator[Any]:
        from distributed import TimeoutError as DaskTimeout
        from distributed import wait as dask_wait

        client = self._start(fn)
        waiting = _WorkerWait(client, self.params)
        waiting.until_a_worker()
        limit = 2 * max(1, sum(client.nthreads().values()))

        def wait_any(pending: set) -> tuple[set, set]:
            while True:
                try:
                    result = dask_wait(list(pending), timeout=POLL, return_when="FIRST_COMPLETED")
                    return set(result.done), set(result.not_done)
                except (DaskTimeout, TimeoutError):
                    waiting.check()  # no worker left: says so, and gives up after wait_for_workers

        def result(future: Any) -> Any:
            # A finished task's result lives on its worker: if that worker is lost before the result
            # is gathered, Dask runs the task again, and that too waits for a worker, not forever.
            while True:
                try:
                    return future.result(timeout=POLL)
                except (DaskTimeout, TimeoutError):
                    if future.status in ("error", "cancelled"):
                        raise  # the task itself raised a TimeoutError
                    waiting.check()

        for future in _bounded(lambda task: client.submit(fn, task, pure=False), tasks, limit, wait_any):
            checkpoint("dask.done")
            yield result(future)
            future.release()


class _WorkerWait:
    """While a cluster has no worker: one line on the terminal, and an EngineError once it has had
    none for `wait_for_workers` seconds."""

    def __init__(self, client: Any, params: EngineParams):
        self.client, self.params, self.since = client, params, None

    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def check(self) -> None:
        if self.workers():
            self.since = None
            return
        now = time.monotonic()
        if self.since is None:
            self.since = now
            if console.is_terminal:
                console.print(
                    f"[yellow]waiting:[/] no Dask worker at {self.where()}; start one with "
                    f"`dask worker {self.params.scheduler or '<scheduler>'}` "
                    f"(giving up after {self.params.wait_for_workers:g} s: {self.params.NAME}.wait_for_workers)",
                    highlight=False,
                )
        if now - self.since >= self.params.wait_for_workers:
            raise EngineError(
                f"no Dask worker at {self.where()} for {self.params.wait_for_workers:g} s "
                f"({self.params.NAME}.wait_for_workers); start workers with `dask worker <scheduler>` "
                "and rerun: what finished is kept"
            )

    def until_a_worker(self) -> None:
        while not self.workers():
            self.check()
            time.sleep(min(POLL, self.params.wait_for_workers))

    def where(self) -> str:
        return self.params.scheduler or "the local cluster"


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


def _start_worker(pid: int, counter: Any) -> None:
    """In each pool process: report progress to the pool's owner (`counter`), and exit when the
    owner is gone (even `kill -9`), instead of finishing its shard as an orphan that a rerun would
    race with."""
    import threading

    report_to(counter)

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


def _unreachable(params: EngineParams, why: str) -> ConfigError:
    return ConfigError(
        f"{params.NAME}.scheduler: cannot reach the Dask scheduler {params.scheduler!r} ({why}); "
        "start one with `dask scheduler` or use --engine local"
    )


def _probe(params: EngineParams) -> None:
    """Fail at once, not after Dask's connect timeout, when nothing listens at a tcp:// address."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(params.scheduler)
    if parts.scheme != "tcp" or not parts.hostname:
        return
    try:
        socket.create_connection((parts.hostname, parts.port or 8786), timeout=params.connect_timeout).close()
    except OSError as exc:
        raise _unreachable(params, exc.strerror or type(exc).__name__) from None


def _handshake(params: EngineParams) -> None:
    """Dask's own connect, handshake included, within `connect_timeout` (its handshake alone has no
    timeout: an HTTP server or a silent listener at the address would hold it forever)."""
    from distributed.comm import connect

    async def shake() -> None:
        timeout = params.connect_timeout
        comm = await asyncio.wait_for(connect(params.scheduler, timeout=timeout), timeout)
        await comm.close()

    try:
        asyncio.run(shake())
    except (TimeoutError, asyncio.TimeoutError):
        why = f"no Dask handshake within {params.connect_timeout:g} s: is it a Dask scheduler?"
        raise _unreachable(params, why) from None
    except (OSError, ValueError) as exc:
        raise _unreachable(params, str(exc).splitlines()[0][:120] or type(exc).__name__) from None
    except Exception as exc:  # anything Dask raises when the peer speaks another protocol
        raise _unreachable(params, f"it does not speak Dask's protocol: {type(exc).__name__}") from None


@contextmanager
def _client(params: EngineParams):
    from distributed import Client, LocalCluster

    if params.scheduler:
        _probe(params)
        _handshake(params)
        try:
            client = Client(params.scheduler, timeout=params.connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise _unreachable(params, type(exc).__name__) from None
        with client:
            yield client
    else:  # no scheduler given: a cluster of this machine's cores, on 127.0.0.1 only
        with (
            LocalCluster(
                n_workers=default_workers(params.workers),
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
                processes=True,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
