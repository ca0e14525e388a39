"""The unit of ingest work: the planned chunks of one input shard, written whole.

A worker fills each chunk of its shard from the sources that meet it
(:func:`~sinolc_dist.imagery.warp.fill_window`) and writes the whole shard
once: one writer per shard.  When the task holds only some of the shard's
chunks (a rerun), the shard is read first and the other chunks keep their
content.  A chunk whose source cannot be read fails alone, with the source's
path in its error.  A source that cannot be read fails the same way on every
attempt, so its chunks are recorded failed at once (``deterministic``); other
errors are retried by the driver.  Workers never touch the state and need no
model (no torch).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
from rasterio.io import DatasetReader

from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.imagery.pixels import SourceReadError
from sinolc_dist.imagery.sources import MosaicOptions, Source
from sinolc_dist.imagery.warp import fill_window
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.state import ChunkResult, worker_label

#: The checksum recorded for a chunk that no source covers (all nodata).
EMPTY = "empty"


@dataclass(frozen=True)
class IngestTask:
    """One shard's chunks to ingest, the sources that meet the shard (priority order), options."""

    grid: Grid
    shard: ChunkId
    chunks: tuple[ChunkId, ...]
    store: str
    sources: tuple[Source, ...]
    options: MosaicOptions

    @property
    def key(self) -> str:
        """Dask task key naming the chunks, e.g. ``ingest-c/0/0..c/1/1``."""
        return f"ingest-{ChunkId.span(self.chunks)}"


def chunk_checksum(data: np.ndarray) -> str:
    """A short content hash of a chunk's input (``"empty"`` when it is all nodata)."""
    if not data.any():
        return EMPTY
    return hashlib.blake2b(np.ascontiguousarray(data).tobytes(), digest_size=8).hexdigest()


def ingest_shard(task: IngestTask) -> list[ChunkResult]:
    """Fill a shard's chunks from the sources and write the whole shard (runs on a worker)."""
    grid, opts = task.grid, task.options
    arr = stores.open_array(task.store, grid)
    if arr.shape[0] != opts.bands:
        raise InputError(f"{task.store} holds {arr.shape[0]} bands, this ingest {opts.bands}")
    shard_win = grid.shard_window(task.shard)
    if set(grid.chunks_in(shard_win)) <= set(task.chunks):
        out = np.zeros((opts.bands, shard_win.height, shard_win.width), np.uint8)
    else:  # keep the other chunks' content: the whole shard is rewritten
        out = stores.read_window(arr, shard_win)
    worker = worker_label()
    results: list[ChunkResult] = []
    opened: dict[str, DatasetReader] = {}  # files stay open for the shard: neighbours share blocks
    try:
        for cid in task.chunks:
            t0 = time.time()
            win = grid.chunk_window(cid)
            try:
                data = fill_window(task.sources, grid, win, opts, opened)
            except Exception as exc:  # reported per chunk: the driver retries or records it failed
                results.append(ChunkResult(cid, False, worker, t0, time.time() - t0,
                                           error=f"{type(exc).__name__}: {exc}",
                                           deterministic=isinstance(exc, SourceReadError)))
                continue
            out[:, win.row0 - shard_win.row0:win.row1 - shard_win.row0,
                win.col0 - shard_win.col0:win.col1 - shard_win.col0] = data
            results.append(ChunkResult(cid, True, worker, t0, time.time() - t0, chunk_checksum(data)))
    finally:
        for ds in opened.values():
            ds.close()
    stores.write_window(arr, shard_win, out)
    return results
