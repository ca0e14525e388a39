"""The unit of ingest work: the planned chunks of one input shard, written whole.

A worker fills each chunk of its shard from the sources that meet it
(:func:`~sinolc_dist.imagery.warp.fill_window`) and writes the whole shard
once: one writer per shard (the read-modify-write of
:mod:`~sinolc_dist.engine.shard_task`).  When the task holds only some of the
shard's chunks (a rerun), the shard is read first and the other chunks keep
their content.  A chunk whose source cannot be read fails alone, with the
source's path in its error.  A source that cannot be read fails the same way
on every attempt, so its chunks are recorded failed at once
(``deterministic``); other errors are retried by the driver.  Workers never
touch the state and need no model (no torch).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
from rasterio.io import DatasetReader

from sinolc_dist.engine import shard_task
from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.imagery.sources import CompositeOptions, ImageryIndex, Source
from sinolc_dist.imagery.warp import fill_window
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import checksum
from sinolc_dist.rundir.state import ChunkResult

#: The checksum recorded for a chunk that no source covers (all nodata).
EMPTY = "empty"


@dataclass(frozen=True)
class IngestTask(shard_task.ShardWork):
    """One shard's chunks to ingest, the sources that meet the shard (priority order), options."""

    store: str
    sources: tuple[Source, ...]
    options: CompositeOptions

    stage: ClassVar[str] = "ingest"


def ingest_tasks(
    grid: Grid, chunks: Iterable[ChunkId], index: ImageryIndex, store: str
) -> Iterator[IngestTask]:
    """One task per input shard, carrying only the sources that meet that shard."""
    return shard_task.tasks_by_shard(grid, chunks, lambda sid, group, sources: IngestTask(
        grid, sid, group, store, sources, index.options), index)


def _input_checksum(data: np.ndarray) -> str:
    """The checksum of a chunk's input: ``"empty"`` when it is all nodata (no source covers it)."""
    return checksum(data) if data.any() else EMPTY


def _fill(task: IngestTask, cid: ChunkId, opened: dict[str, DatasetReader]) -> tuple[np.ndarray]:
    """One chunk's bands from the task's sources."""
    return (fill_window(task.sources, task.grid, task.grid.chunk_window(cid), task.options, opened),)


def ingest_shard(task: IngestTask) -> list[ChunkResult]:
    """Fill a shard's chunks from the sources and write the whole shard (runs on a worker)."""
    arr = stores.open_array(task.store, task.grid)
    if arr.shape[0] != task.options.bands:
        raise InputError(f"{task.store} holds {arr.shape[0]} bands, this ingest {task.options.bands}")
    buffers = shard_task.shard_buffers(task, [arr])
    with shard_task.open_files() as opened:
        steps = ((cid, partial(_fill, task, cid, opened)) for cid in task.chunks)
        results = shard_task.fill_shard(task, buffers, steps, mark=_input_checksum)
    shard_task.write_buffers(task, [arr], buffers)
    return results
