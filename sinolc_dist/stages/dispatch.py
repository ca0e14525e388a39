"""The driver: bounded in-flight dispatch of per-shard tasks, retries, state, progress.

The driver alone writes the state: workers return :class:`ChunkResult` lists
and the driver records them in batches.  Only ``max_in_flight`` tasks are
submitted at a time, so the scheduler and the driver stay small whatever the
region's size.  Task keys name their chunks (``infer-c/r/c..c/r/c-a1``), so the
dashboard shows what runs.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from distributed import Client, as_completed

from sinolc_dist.engine.inference import run_shard
from sinolc_dist.errors import Interrupted
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.rundir.state import ChunkResult, StateStore

log = logging.getLogger("sinolc_dist.stages.dispatch")


class Task(Protocol):
    """What the driver needs of a unit of work (a frozen dataclass: retries use ``replace``)."""

    @property
    def grid(self) -> Grid: ...  # noqa: D102

    @property
    def chunks(self) -> tuple[ChunkId, ...]: ...  # noqa: D102

    @property
    def key(self) -> str: ...  # noqa: D102


T = TypeVar("T", bound=Task)


class Watcher(Protocol):
    """What follows a dispatch chunk by chunk (the live map, :class:`~sinolc_dist.stages.live.LiveRun`)."""

    def submitted(self, chunks: tuple[ChunkId, ...], key: str) -> None:
        """Chunks sent to the cluster in the task ``key``."""

    def retrying(self, result: ChunkResult) -> None:
        """A chunk's attempt failed and the chunk goes back to the queue."""

    def recorded(self, results: list[ChunkResult]) -> None:
        """Results now in the state (after ``on_record``)."""

    def progress(self, report: RunReport) -> None:
        """The report after a flush (before ``on_progress``)."""


@dataclass
class RunReport:
    """What a dispatch did: counts, time and the failures with their reasons."""

    done: int = 0
    failed: int = 0
    retried: int = 0
    seconds: float = 0.0
    pixels: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def px_per_s(self) -> float:
        """Pixels classified per second of wall time."""
        return self.pixels / self.seconds if self.seconds else 0.0


class Interrupt(BaseException):  # like KeyboardInterrupt: the dispatch's `except Exception` lets it by
    """SIGINT or SIGTERM in the driver's main thread, raised where the driver stands."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interruptible(done: Callable[[], int]) -> Iterator[None]:
    """Turn SIGINT and SIGTERM inside the block into :class:`Interrupted` once the block has unwound.

    The first signal raises :class:`Interrupt` where the driver stands, so what
    encloses the block cleans up on the way out (the dispatch flushes its results
    to the state, ``open_cluster`` cancels the worker jobs); later ones are
    ignored until then.  The error says how many chunks ``done()`` counts and
    exits 130 or 143.  dask-jobqueue's own SIGINT handler (``sys.exit()``: exit 0,
    not a word) is set aside meanwhile.  Outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not fired:
            fired.append(signum)
            raise Interrupt(signum)
        log.warning("%s while stopping: ignored, the state is being flushed and the worker jobs "
                    "cancelled", signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except Interrupt as exc:
        message = f"interrupted: {done()} chunks done, resume with the same command"
        log.error("%s (%s; state flushed, worker jobs cancelled)", message, exc)
        raise Interrupted(message, exc.signum) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


#: The driver records results in batches: this many, or after this many seconds.
FLUSH_RESULTS, FLUSH_SECONDS = 256, 1.0


class Dispatcher(Generic[T]):
    """The driver's dispatch of one stage: ``submit`` a task, ``handle`` its result, ``flush`` the state.

    A class rather than one long function: the in-flight futures, the retry
    backlog, the attempts per chunk and the results not yet recorded are its
    state, and each step of the loop (:meth:`run`) is one short method.
    ``work`` is the function a worker runs for a task and returns the chunk
    results (the engine's :func:`run_shard`; ingest's and the dispatch
    benchmark's their own); with ``finish``, ``work`` returns an intermediate
    that a second task ``finish(task, intermediate)`` turns into the results,
    on the same worker (the engine's compute and write stages: the write
    overlaps the next shard's compute).  ``resources`` is what each ``work``
    task asks of a worker (``{"GPU": 1}`` on GPU clusters); ``finish`` tasks
    ask nothing.  ``watchers`` (empty at first) see each submission, retry,
    recorded batch and report (:class:`Watcher`).
    """

    def __init__(
        self, client: Client, state: StateStore, retries: int, max_in_flight: int,
        work: Callable[[T], Any] = run_shard,  # type: ignore[assignment]
        finish: Callable[[T, Any], list[ChunkResult]] | None = None,
        resources: dict[str, float] | None = None,
        on_progress: Callable[[RunReport], None] = lambda r: None,
        on_record: Callable[[list[ChunkResult]], None] = lambda results: None,
    ) -> None:
        self.client, self.state, self.retries, self.max_in_flight = client, state, retries, max_in_flight
        self.work, self.finish, self.resources, self.on_progress = work, finish, resources, on_progress
        self.on_record = on_record
        self.report = RunReport()
        self.watchers: list[Watcher] = []
        self._attempts: dict[ChunkId, int] = defaultdict(int)
        self._queue: Iterator[T] = iter(())
        self._backlog: list[T] = []
        self._pending: list[ChunkResult] = []
        self._futures: dict[object, T] = {}
        self._seq = as_completed()
        self._t_start = self._last_flush = time.time()

    def run(self, tasks: Iterable[T]) -> RunReport:
        """Run ``tasks`` with at most ``max_in_flight`` in flight; every result is recorded, also on an error.

        An interrupt (or any error) flushes the results already returned before it propagates.
        """
        self._queue = iter(tasks)
        try:
            for _ in range(self.max_in_flight):
                if not self.submit():
                    break
            for fut in self._seq:
                self.handle(fut)
                self.submit()
                if len(self._pending) >= FLUSH_RESULTS or time.time() - self._last_flush > FLUSH_SECONDS:
                    self.flush()
        finally:
            self.flush()
        return self.report

    def submit(self) -> bool:
        """Submit the next task (a retry first); ``False`` when none is left.

        Task keys carry the attempt (``-a2``), so a retry is a new task to the scheduler.
        """
        task = self._backlog.pop() if self._backlog else next(self._queue, None)
        if task is None:
            return False
        n = 1 + max(self._attempts[c] for c in task.chunks)
        key = f"{task.key}-a{n}"
        fut = self.client.submit(self.work, task, key=key, pure=False, retries=0, resources=self.resources)
        for watcher in self.watchers:
            watcher.submitted(task.chunks, key)
        if self.finish is not None:  # a second task writes, on the same worker, while the next computes
            fut = self.client.submit(self.finish, task, fut, key=f"write-{task.key.split('-', 1)[1]}-a{n}",
                                     pure=False, retries=0)
        self._futures[fut] = task
        self._seq.add(fut)
        return True

    def handle(self, fut: Any) -> None:
        """Take a finished task's chunk results: count and queue them, and put the chunks to retry back."""
        task = self._futures.pop(fut)
        try:
            results = fut.result()
        except Exception as exc:  # the task itself died (worker lost, KilledWorker, ...)
            reason = f"{type(exc).__name__}: {exc}"
            results = [ChunkResult(c, False, error=reason) for c in task.chunks]
        retry = [r.chunk for r in results if self._take(task, r)]
        if retry:
            self._backlog.append(dataclasses.replace(task, chunks=tuple(retry)))

    def _take(self, task: T, r: ChunkResult) -> bool:
        """Count one chunk's result: ``True`` to retry the chunk, else it is queued for the state.

        A deterministic failure (a corrupt file) fails at once; others get ``retries`` more attempts.
        """
        attempts = self._attempts[r.chunk] = self._attempts[r.chunk] + 1
        if r.ok:
            self.report.done += 1
            w = task.grid.chunk_window(r.chunk)
            self.report.pixels += w.height * w.width
            self._pending.append(ChunkResult(r.chunk, True, r.worker, r.started, r.seconds, r.checksum,
                                             attempts=attempts))
            log.info("chunk %s done on %s in %.2fs", r.chunk.key, r.worker, r.seconds)
            return False
        if attempts <= self.retries and not r.deterministic:
            self.report.retried += 1
            log.warning("chunk %s failed (attempt %d), retrying: %s", r.chunk.key, attempts, r.error)
            for watcher in self.watchers:
                watcher.retrying(r)
            return True
        self.report.failed += 1
        self.report.errors[r.chunk.key] = r.error
        self._pending.append(ChunkResult(r.chunk, False, r.worker, r.started, r.seconds, error=r.error,
                                         attempts=attempts))
        log.error("chunk %s failed after %d attempts: %s", r.chunk.key, attempts, r.error)
        return False

    def flush(self) -> None:
        """Record the queued results in the state, pass them to ``on_record``, report progress.

        ``on_record`` sees each batch once it is in the state (the run's
        streamed delivery releases the provinces it completes).
        """
        if self._pending:
            recorded, self._pending = self._pending, []
            self.state.record(recorded)
            self.on_record(recorded)
            for watcher in self.watchers:
                watcher.recorded(recorded)
        self._last_flush = time.time()
        self.report.seconds = time.time() - self._t_start
        for watcher in self.watchers:
            watcher.progress(self.report)
        self.on_progress(self.report)


def dispatch(
    client: Client,
    state: StateStore,
    tasks: Iterable[T],
    retries: int,
    max_in_flight: int,
    on_progress: Callable[[RunReport], None] = lambda r: None,
    work: Callable[[T], Any] = run_shard,  # type: ignore[assignment]
    resources: dict[str, float] | None = None,
    finish: Callable[[T, Any], list[ChunkResult]] | None = None,
) -> RunReport:
    """Run tasks on the cluster, retrying failed chunks, recording every result (see :class:`Dispatcher`).

    A chunk that raises (or whose worker dies) is retried up to ``retries``
    times, then recorded as failed with its reason; the rest goes on.
    """
    return Dispatcher(client, state, retries, max_in_flight, work, finish, resources, on_progress).run(tasks)
