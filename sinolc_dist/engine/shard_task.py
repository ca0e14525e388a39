"""One shard of a store as one unit of work: the whole-shard read-modify-write both stages' tasks share.

A Zarr shard is written whole by one task, never in part and never by two
tasks at once (one writer per shard): a task holds the planned chunks of one
shard, fills a whole-shard buffer chunk by chunk and writes it once.  When the
task holds only some of the shard's chunks (a rerun), the buffer starts from
the shard as stored, so the other chunks keep their content.  A chunk that
fails (unreadable imagery, a model error) is reported alone in its
:class:`~sinolc_dist.rundir.state.ChunkResult` and keeps the shard's earlier
content; a source that cannot be read fails the same way on every attempt, so
its result is marked ``deterministic`` (recorded failed at once).

The inference task (:class:`~sinolc_dist.engine.inference.ShardTask`) and the
ingest task (:class:`~sinolc_dist.engine.ingest_task.IngestTask`) are both a
:class:`ShardWork`; :func:`tasks_by_shard` builds either kind from a list of chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import zarr
from rasterio.io import DatasetReader

from sinolc_dist.grid import ChunkId, Grid, ShardId, Window
from sinolc_dist.imagery.pixels import SourceReadError
from sinolc_dist.imagery.sources import ImageryIndex, Source
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import checksum
from sinolc_dist.rundir.state import ChunkResult, worker_label

T = TypeVar("T")
#: Builds one task: ``make(shard, its planned chunks, the sources that meet it)``.
MakeTask = Callable[[ShardId, tuple[ChunkId, ...], tuple[Source, ...]], T]
#: One chunk's computation, run when its turn comes: its arrays (classes, then confidence; or input bands).
Produce = Callable[[], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class ShardWork:
    """The planned chunks of one shard: what one task computes and writes whole."""

    grid: Grid
    shard: ShardId
    chunks: tuple[ChunkId, ...]

    #: The stage's name, the first part of the task's Dask key.
    stage: ClassVar[str] = "shard"

    @property
    def key(self) -> str:
        """Dask task key naming the chunks (first..last), e.g. ``ingest-c/0/0..c/1/1``."""
        return f"{self.stage}-{ChunkId.span(self.chunks)}"

    @property
    def window(self) -> Window:
        """The shard's pixel window (clipped to the grid)."""
        return self.grid.shard_window(self.shard)


def tasks_by_shard(
    grid: Grid, chunks: Iterable[ChunkId], make: MakeTask[T],
    index: ImageryIndex | None = None, halo: int = 0,
) -> Iterator[T]:
    """One task per shard (shards and chunks in (row, col) order), built by ``make(shard, chunks, sources)``.

    ``sources`` are the files of ``index`` that meet the shard grown by ``halo``
    px (within the grid), so a task carries only what it reads; ``()`` without an index.
    """
    for sid, group in grid.by_shard(chunks).items():
        if index is None:
            yield make(sid, group, ())
            continue
        reach = grid.shard_window(sid).grow(halo).intersect(grid.full_window)
        yield make(sid, group, index.overlapping(grid.window_bounds(reach)))


def shard_buffers(work: ShardWork, arrays: Sequence[zarr.Array]) -> list[np.ndarray]:
    """Whole-shard buffers for ``arrays``: zeros when the task plans every chunk, else the shard as stored."""
    win = work.window
    if set(work.grid.chunks_in(win)) <= set(work.chunks):
        return [np.zeros((*arr.shape[:-2], win.height, win.width), np.uint8) for arr in arrays]
    return [stores.read_window(arr, win) for arr in arrays]  # the other chunks keep their content


def fill_shard(
    work: ShardWork, buffers: Sequence[np.ndarray], steps: Iterable[tuple[ChunkId, Produce]],
    mark: Callable[[np.ndarray], str] = checksum,
) -> list[ChunkResult]:
    """Run each chunk's step and put its arrays in their place in the buffers; one result per chunk.

    A step that raises fails its chunk alone (the error in its result); the
    chunk's place keeps the buffer's content.  ``mark`` gives the checksum
    recorded for a chunk from its first array.
    """
    worker = worker_label()
    win = work.window
    results: list[ChunkResult] = []
    for cid, produce in steps:
        t0 = time.time()
        try:
            arrays = produce()
        except Exception as exc:  # reported per chunk: the driver retries or records it failed
            results.append(ChunkResult(cid, False, worker, t0, time.time() - t0,
                                       error=f"{type(exc).__name__}: {exc}",
                                       deterministic=isinstance(exc, SourceReadError)))
            continue
        place = (..., *work.grid.chunk_window(cid).within(win))
        for buffer, arr in zip(buffers, arrays, strict=True):
            buffer[place] = arr
        results.append(ChunkResult(cid, True, worker, t0, time.time() - t0, mark(arrays[0])))
    return results


def write_buffers(work: ShardWork, arrays: Sequence[zarr.Array], buffers: Sequence[np.ndarray]) -> None:
    """Write each whole-shard buffer to its array, once: the one write of the shard."""
    for arr, buffer in zip(arrays, buffers, strict=True):
        stores.write_window(arr, work.window, buffer)


@contextmanager
def open_files() -> Iterator[dict[str, DatasetReader]]:
    """The source files a task opens, kept open for the whole shard (neighbours share blocks), then closed."""
    opened: dict[str, DatasetReader] = {}
    try:
        yield opened
    finally:
        for ds in opened.values():
            ds.close()
