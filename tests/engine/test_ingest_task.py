"""The ingest task: a shard's chunks filled from real GeoTIFF sources and written whole."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import small_grid

from sinolc_dist.engine.ingest_task import EMPTY, IngestTask, ingest_shard, ingest_tasks
from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId, ShardId, Window
from sinolc_dist.imagery.index import build_index
from sinolc_dist.imagery.sources import CompositeOptions
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import checksum

GRID = small_grid()  # 300 x 260 px, 64 px chunks, 2 x 2 chunks per shard
NEAREST = CompositeOptions(bands=3, resampling="nearest")


def write_geotiff(path, window: Window, seed: int) -> np.ndarray:
    """A uint8 RGB GeoTIFF on the grid's own lattice over ``window``; returns its pixels (all >= 1)."""
    data = np.random.default_rng(seed).integers(1, 256, size=(3, window.height, window.width), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=window.width, height=window.height, count=3,
                       dtype="uint8", crs=GRID.crs, transform=GRID.window_transform(window)) as ds:
        ds.write(data)
    return data


def test_ingest_task_without_sources_writes_empty_bands(tmp_path):
    arr = stores.create_store(tmp_path / "in.zarr", GRID, "input", bands=3)
    stores.write_window(arr, GRID.full_window, np.full((3, *GRID.size), 9, np.uint8))
    chunks = (ChunkId(0, 2), ChunkId(1, 3))
    results = ingest_shard(IngestTask(GRID, ShardId(0, 1), chunks, str(tmp_path / "in.zarr"), (),
                                      CompositeOptions(bands=3)))
    assert [(r.chunk, r.ok, r.checksum) for r in results] == [(c, True, EMPTY) for c in chunks]
    got = stores.read_window(arr, GRID.shard_window(ShardId(0, 1)))
    assert got.shape == (3, 128, 128)
    assert (got[:, :64, :64] == 0).all() and (got[:, 64:, 64:] == 0).all()
    assert (got[:, :64, 64:] == 9).all() and (got[:, 64:, :64] == 9).all()  # not planned: kept


def test_ingest_task_refuses_a_store_of_other_bands(tmp_path):
    stores.create_store(tmp_path / "in.zarr", GRID, "input", bands=4)
    task = IngestTask(GRID, ShardId(0, 0), (ChunkId(0, 0),), str(tmp_path / "in.zarr"), (),
                      CompositeOptions(bands=3))
    with pytest.raises(InputError, match="holds 4 bands, this ingest 3"):
        ingest_shard(task)


def test_ingest_task_fills_chunks_from_geotiffs_and_fails_an_unreadable_one_alone(tmp_path):
    good = write_geotiff(tmp_path / "good.tif", Window(0, 0, 64, 64), 1)  # chunk (0, 0) exactly
    write_geotiff(tmp_path / "bad.tif", Window(0, 64, 64, 128), 2)  # chunk (0, 1)
    index = build_index([str(tmp_path / "*.tif")], GRID, NEAREST).index
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + bytes(64))  # broken after it was indexed
    arr = stores.create_store(tmp_path / "in.zarr", GRID, "input", bands=3)
    chunks = (ChunkId(0, 0), ChunkId(0, 1), ChunkId(1, 0), ChunkId(1, 1))
    (task,) = ingest_tasks(GRID, chunks, index, str(tmp_path / "in.zarr"))
    assert task.shard == ShardId(0, 0) and task.options == NEAREST
    ok, bad, empty, _ = ingest_shard(task)
    assert ok.ok and ok.checksum == checksum(good)
    assert not bad.ok and bad.deterministic and f"{tmp_path / 'bad.tif'} :: " in bad.error
    assert empty.ok and empty.checksum == EMPTY
    got = stores.read_window(arr, GRID.shard_window(ShardId(0, 0)))
    assert np.array_equal(got[:, :64, :64], good)
    assert not got[:, :, 64:].any() and not got[:, 64:].any()  # the failed chunk is left empty


def test_ingest_tasks_carry_only_the_sources_that_meet_their_shard(tmp_path):
    write_geotiff(tmp_path / "north.tif", Window(0, 0, 64, 64), 3)  # shard (0, 0)
    write_geotiff(tmp_path / "south.tif", Window(260, 140, 300, 200), 4)  # shard (2, 1)
    index = build_index([str(tmp_path / "*.tif")], GRID, NEAREST).index
    chunks = [ChunkId(0, 0), ChunkId(4, 3), ChunkId(2, 0)]
    tasks = list(ingest_tasks(GRID, chunks, index, "in.zarr"))
    assert [(t.shard, t.chunks) for t in tasks] == [(ShardId(0, 0), (ChunkId(0, 0),)),
                                                    (ShardId(1, 0), (ChunkId(2, 0),)),
                                                    (ShardId(2, 1), (ChunkId(4, 3),))]
    names = [[s.path.rsplit("/", 1)[1] for s in t.sources] for t in tasks]
    assert names == [["north.tif"], [], ["south.tif"]]
    assert all(t.store == "in.zarr" and t.key.startswith("ingest-") for t in tasks)
