"""The integrity scan over real Zarr stores: shard listing, checksums, unreadable shards, sampling."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
from conftest import small_grid

from sinolc_dist.grid import ChunkId, ShardId
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import (
    MISSING,
    check_done,
    check_shards,
    checksum,
    local_runner,
    present_shards,
    quarantine,
    stale_chunks,
)
from sinolc_dist.rundir.state import ChunkResult, StateStore

GRID = small_grid()  # 5 x 5 chunks of 64 px, 3 x 3 shards


def _store(tmp_path: Path, state_path: Path) -> np.ndarray:
    """An output store over GRID with every chunk done and its checksum recorded; returns the classes."""
    classes = np.random.default_rng(2).integers(1, 11, GRID.size, dtype=np.uint8)
    out = stores.create_store(tmp_path / "out.zarr", GRID, "output")
    stores.write_window(out, GRID.full_window, classes)
    chunks = sorted(GRID.chunks_in(GRID.full_window))
    with StateStore(state_path) as state:
        state.add_chunks((c, ["420000"]) for c in chunks)
        state.record([ChunkResult(c, True, checksum=checksum(classes[GRID.chunk_window(c).slices()]))
                      for c in chunks])
    return classes


def _shard_file(tmp_path: Path, sid: ShardId) -> Path:
    return tmp_path / "out.zarr" / stores.OUTPUT_ARRAY / "c" / str(sid.row) / str(sid.col)


def test_checksum_is_of_the_content():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert checksum(a) == checksum(a.copy()) == checksum(np.asfortranarray(a)) != checksum(a[::-1])
    assert len(checksum(a)) == 16


def test_present_shards_are_shard_ids(tmp_path):
    _store(tmp_path, tmp_path / "state.sqlite")
    found = present_shards(tmp_path / "out.zarr")
    assert found == {ShardId(r, c) for r in range(3) for c in range(3)}
    assert all(type(s) is ShardId for s in found)
    assert present_shards(tmp_path / "nowhere.zarr") == set()


def test_changed_and_unreadable_shards_are_found(tmp_path):
    classes = _store(tmp_path, tmp_path / "state.sqlite")
    sums = {c: checksum(classes[GRID.chunk_window(c).slices()]) for c in GRID.chunks_in(GRID.full_window)}
    out = stores.open_array(tmp_path / "out.zarr", GRID)
    stores.write_window(out, GRID.shard_window(ShardId(0, 0)),
                        np.zeros((128, 128), np.uint8))  # chunks (0,0)..(1,1) changed
    path = _shard_file(tmp_path, ShardId(1, 1))
    data = bytearray(path.read_bytes())
    data[-12] ^= 0xFF  # the shard index: every read fails
    path.write_bytes(bytes(data))
    jobs = [(s, tuple((c, sums[c]) for c in GRID.by_shard(sums)[s])) for s in
            (ShardId(0, 0), ShardId(0, 1), ShardId(1, 1))]
    changed, unreadable = check_shards(GRID, str(tmp_path / "out.zarr"), jobs)
    assert changed.shard == ShardId(0, 0) and len(changed.chunks) == 4 and not changed.unreadable
    assert unreadable.shard == ShardId(1, 1) and unreadable.unreadable == (stores.OUTPUT_ARRAY,)
    assert unreadable.reason.startswith("unreadable (classes ")
    moved = quarantine(tmp_path / "out.zarr", ShardId(1, 1), "T1")
    assert moved == tmp_path / "out.zarr.quarantine" / "T1" / stores.OUTPUT_ARRAY / "c" / "1" / "1"
    assert moved.is_file() and not path.exists()
    assert quarantine(tmp_path / "out.zarr", ShardId(1, 1), "T2") is None  # nothing left to move


def test_a_damaged_sample_widens_and_missing_shards_are_bad_unread(tmp_path):
    _store(tmp_path, tmp_path / "state.sqlite")
    _shard_file(tmp_path, ShardId(2, 2)).unlink()
    out = stores.open_array(tmp_path / "out.zarr", GRID)
    stores.write_window(out, GRID.chunk_window(ChunkId(0, 4)), np.zeros((64, 44), np.uint8))
    opened: list[int] = []
    local = local_runner(GRID, tmp_path / "out.zarr")

    def open_runner():
        opened.append(1)
        return nullcontext(local)

    with StateStore(tmp_path / "state.sqlite") as state:
        report = check_done(state, GRID, tmp_path / "out.zarr", open_runner, sample=25, seed=1)
        assert report.widened and opened == [1]  # damage found: widened, the runner opened once
        assert report.bad == [ChunkId(0, 4), ChunkId(4, 4)]
        assert [v.reason for v in report.verdicts] == [MISSING, "classes differ from their recorded checksum"]
        assert report.checked_shards == 9 and report.done == 25
        # a resume's cheap check: a sample of one chunk misses the changed one, never the missing shard
        assert stale_chunks(state, GRID, tmp_path / "out.zarr", sample=1, seed=3) == [ChunkId(4, 4)]
