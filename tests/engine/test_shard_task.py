"""The shared shard task: whole-shard read-modify-write over real Zarr stores, keys, the task builder."""

from __future__ import annotations

import numpy as np
from conftest import small_grid

from sinolc_dist.engine.inference import ModelRef, ShardTask, shard_tasks
from sinolc_dist.engine.ingest_task import IngestTask
from sinolc_dist.engine.shard_task import ShardWork, fill_shard, shard_buffers, tasks_by_shard, write_buffers
from sinolc_dist.grid import ChunkId, ShardId
from sinolc_dist.imagery.pixels import SourceReadError
from sinolc_dist.imagery.sources import CompositeOptions
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import checksum

GRID = small_grid()  # 300 x 260 px, 64 px chunks, 2 x 2 chunks per shard


def test_tasks_are_keyed_by_stage_and_chunk_span():
    chunks = (ChunkId(0, 0), ChunkId(1, 1))
    infer = ShardTask(GRID, ShardId(0, 0), chunks, "in", "out", ModelRef("x"))
    ingest = IngestTask(GRID, ShardId(0, 0), chunks, "in", (), CompositeOptions())
    assert (infer.key, ingest.key) == ("infer-c/0/0..c/1/1", "ingest-c/0/0..c/1/1")
    assert infer.window == ingest.window == GRID.shard_window(ShardId(0, 0))


def test_builder_groups_chunks_by_shard_in_order():
    chunks = [ChunkId(3, 2), ChunkId(0, 1), ChunkId(2, 3), ChunkId(0, 0), ChunkId(2, 2)]
    built = list(tasks_by_shard(GRID, chunks, lambda s, g, src: (s, g, src)))
    assert built == [(ShardId(0, 0), (ChunkId(0, 0), ChunkId(0, 1)), ()),
                     (ShardId(1, 1), (ChunkId(2, 2), ChunkId(2, 3), ChunkId(3, 2)), ())]
    tasks = list(shard_tasks(GRID, chunks, "in", "out", ModelRef("x")))
    assert [(t.shard, t.chunks, t.sources, t.options) for t in tasks] == [
        (s, g, (), None) for s, g, _ in built]
    assert all(isinstance(t.shard, ShardId) for t in tasks)


def _classes_store(tmp_path, value: int):
    out = stores.create_store(tmp_path / "out.zarr", GRID, "output")
    stores.write_window(out, GRID.full_window, np.full(GRID.size, value, np.uint8))
    return out


def test_partial_task_keeps_the_other_chunks_and_failed_ones(tmp_path):
    out = _classes_store(tmp_path, 7)
    planned = (ChunkId(0, 0), ChunkId(0, 1), ChunkId(1, 0))  # (1, 1) is not planned
    work = ShardWork(GRID, ShardId(0, 0), planned)
    buffers = shard_buffers(work, [out])

    def fails(exc: Exception):
        def produce() -> tuple[np.ndarray, ...]:
            raise exc
        return produce

    made = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    results = fill_shard(work, buffers, [(ChunkId(0, 0), lambda: (made,)),
                                         (ChunkId(0, 1), fails(SourceReadError("a.tif", "truncated"))),
                                         (ChunkId(1, 0), fails(ValueError("model broke")))])
    write_buffers(work, [out], buffers)
    ok, unreadable, broken = results
    assert ok.ok and ok.checksum == checksum(made) and ok.worker
    assert not unreadable.ok and unreadable.deterministic and "a.tif :: truncated" in unreadable.error
    assert not broken.ok and not broken.deterministic and broken.error == "ValueError: model broke"
    got = stores.read_window(out, GRID.shard_window(ShardId(0, 0)))
    assert np.array_equal(got[:64, :64], made)
    assert (got[:64, 64:] == 7).all() and (got[64:, :] == 7).all()  # failed and unplanned chunks keep theirs
    assert (stores.read_window(out, GRID.shard_window(ShardId(0, 1))) == 7).all()  # another shard untouched


def test_whole_shard_task_starts_from_an_empty_shard(tmp_path):
    out = _classes_store(tmp_path, 7)
    sid = ShardId(2, 1)  # the clipped bottom shard: rows 256..300
    work = ShardWork(GRID, sid, tuple(GRID.chunks_in(GRID.shard_window(sid))))
    (buffer,) = shard_buffers(work, [out])
    assert buffer.shape == (44, 128) and not buffer.any()
    results = fill_shard(work, [buffer], [(ChunkId(4, 2), lambda: (np.full((44, 64), 3, np.uint8),))])
    write_buffers(work, [out], [buffer])
    got = stores.read_window(out, GRID.shard_window(sid))
    assert results[0].ok and (got[:, :64] == 3).all() and (got[:, 64:] == 0).all()
