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
from typing import Any, Protocol, TypeVar

from distributed import Client, as_completed

from sinolc_dist.engine.inference import ModelRef, ShardTask, run_shard
from sinolc_dist.errors import Interrupted
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.imagery.sources import ImageryIndex
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


def shard_tasks(
    grid: Grid, chunks: Iterable[ChunkId], input_path: str, output_path: str, model: ModelRef,
    imagery: ImageryIndex | None = None,
) -> Iterator[ShardTask]:
    """Group chunks by output shard (one task per shard, chunks in (row, col) order).

    With ``imagery`` each task reads its chunks straight from the source files
    that meet the shard and its halo, instead of from the input store.
    """
    for sid, group in grid.by_shard(chunks).items():
        if imagery is None:
            yield ShardTask(grid, sid, group, input_path, output_path, model)
            continue
        halo = grid.shard_window(sid).grow(grid.halo).intersect(grid.full_window)
        sources = imagery.overlapping(grid.window_bounds(halo))
        yield ShardTask(grid, sid, group, input_path, output_path, model, sources, imagery.options)


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
    """Run tasks on the cluster, retrying failed chunks, recording every result.

    A chunk that raises (or whose worker dies) is retried up to ``retries``
    times, then recorded as failed with its reason; the rest goes on.  ``work``
    is the function a worker runs for a task and returns the chunk results (the
    engine's :func:`run_shard`; ingest's and the dispatch benchmark's their own);
    with ``finish``, ``work`` returns an intermediate that a second task
    ``finish(task, intermediate)`` turns into the results, on the same worker
    (the engine's compute and write stages: the write overlaps the next
    shard's compute).  ``resources`` is what each ``work`` task asks of a worker
    (``{"GPU": 1}`` on GPU clusters); ``finish`` tasks ask nothing.
    """
    report = RunReport()
    t_start = time.time()
    queue = iter(tasks)
    attempts: dict[ChunkId, int] = defaultdict(int)
    backlog: list[T] = []
    pending: list[ChunkResult] = []
    last_flush = time.time()
    seq = as_completed()
    futures: dict[object, T] = {}

    def submit_next() -> bool:
        task = backlog.pop() if backlog else next(queue, None)
        if task is None:
            return False
        n = 1 + max(attempts[c] for c in task.chunks)
        fut = client.submit(work, task, key=f"{task.key}-a{n}", pure=False, retries=0,
                            resources=resources)
        if finish is not None:  # a second task writes, on the same worker, while the next computes
            fut = client.submit(finish, task, fut, key=f"write-{task.key.split('-', 1)[1]}-a{n}",
                                pure=False, retries=0)
        futures[fut] = task
        seq.add(fut)
        return True

    def flush() -> None:
        nonlocal last_flush
        if pending:
            state.record(pending)
            pending.clear()
        last_flush = time.time()
        report.seconds = time.time() - t_start
        on_progress(report)

    try:
        for _ in range(max_in_flight):
            if not submit_next():
                break
        for fut in seq:
            task = futures.pop(fut)
            try:
                results = fut.result()
            except Exception as exc:  # the task itself died (worker lost, KilledWorker, ...)
                reason = f"{type(exc).__name__}: {exc}"
                results = [ChunkResult(c, False, error=reason) for c in task.chunks]
            retry: list[ChunkId] = []
            for r in results:
                attempts[r.chunk] += 1
                if r.ok:
                    report.done += 1
                    w = task.grid.chunk_window(r.chunk)
                    report.pixels += w.height * w.width
                    pending.append(ChunkResult(r.chunk, True, r.worker, r.started, r.seconds,
                                               r.checksum, attempts=attempts[r.chunk]))
                    log.info("chunk %s done on %s in %.2fs", r.chunk.key, r.worker, r.seconds)
                elif attempts[r.chunk] <= retries and not r.deterministic:  # a corrupt file fails at once
                    retry.append(r.chunk)
                    report.retried += 1
                    log.warning("chunk %s failed (attempt %d), retrying: %s",
                                r.chunk.key, attempts[r.chunk], r.error)
                else:
                    report.failed += 1
                    report.errors[r.chunk.key] = r.error
                    pending.append(ChunkResult(r.chunk, False, r.worker, r.started, r.seconds,
                                               error=r.error, attempts=attempts[r.chunk]))
                    log.error("chunk %s failed after %d attempts: %s",
                              r.chunk.key, attempts[r.chunk], r.error)
            if retry:
                backlog.append(dataclasses.replace(task, chunks=tuple(retry)))
            submit_next()
            if len(pending) >= 256 or time.time() - last_flush > 1.0:
                flush()
    finally:  # an interrupt (or any error) keeps every result already returned
        flush()
    return report
