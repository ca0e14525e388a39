from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import shapely

from sinolc_dist.deliver.blocks import Made, Refused, block_task, group_task
from sinolc_dist.deliver.tiled import cog_plan
from sinolc_dist.errors import InputError
from sinolc_dist.grid import CHINA_ALBERS, Grid, Window
from sinolc_dist.rundir.stores import create_store, write_window

GRID = Grid(crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0),
            size=(12_288, 12_288), chunk=1024, block=512, shard=2, halo=16)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Classes in the top-left 2048 x 2048 px; the rest of the store is never written (nodata)."""
    path = tmp_path_factory.mktemp("blocks") / "output.zarr"
    arr = create_store(path, GRID, "output")
    rng = np.random.default_rng(5)
    patches = rng.integers(1, 12, size=(256, 256), dtype=np.uint8)
    write_window(arr, Window(0, 0, 2048, 2048), np.kron(patches, np.ones((8, 8), np.uint8)))
    return path


def _disc(window: Window) -> shapely.Polygon:
    return shapely.box(*GRID.window_bounds(window)).centroid.buffer(window.width * 0.45)


def test_plan_rounds_levels_and_blocks(store, tmp_path):
    plan = cog_plan(tmp_path / "p.tif", GRID, store, Window(7, 3, 12_000, 11_003), None, block_px=1024)
    assert (plan.tile, plan.step, plan.block, plan.factors) == (512, 2, 1024, [2, 4, 8, 16, 32])
    assert plan.rounds() == 5  # one factor of 2 a round
    assert [plan.level_of(f) for f in (1, 2, 32, 64)] == [0, 1, 5, None]
    assert plan.block_window(1, 0, 1) == Window(7, 1027, 1031, 2051)
    assert plan.block_window(3, 1, 1) == Window(4103, 4099, 8199, 8195)
    assert plan.block_window(1, 11, 10) == Window(11271, 10243, 12_000, 11_003)  # clipped at the end
    assert plan.parts.is_dir() and plan.parts.name == f".p.tif.{plan.attempt}.parts"
    again = cog_plan(tmp_path / "p.tif", GRID, store, Window(0, 0, 2048, 2048), None)
    assert not plan.parts.exists() and again.parts.is_dir()  # a forgotten attempt's parts go
    assert again.step == 16


def test_an_empty_block_makes_nothing_and_a_refused_child_is_passed_on(store, tmp_path):
    plan = cog_plan(tmp_path / "p.tif", GRID, store, Window(0, 0, 8192, 8192), None, block_px=1024)
    empty = block_task(plan, 5, 5)  # inside the window, nothing written in the store there
    assert isinstance(empty, Made) and (empty.tiles, empty.top) == ([], None)
    refused = Refused(InputError, "disk full")
    assert group_task(plan, 2, 0, 0, (0, 0, block_task(plan, 0, 0)), (0, 1, refused)) is refused
    assert group_task(plan, 2, 2, 2, (4, 4, empty)) == Made([])


def test_memory_per_block_does_not_grow_with_the_window(store, tmp_path):
    """The peak of one block task (numpy's arrays, traced) is the same for a 2k and a 12k px window."""
    peaks = []
    for side in (2048, 12_288):
        window = Window(0, 0, side, side)
        plan = cog_plan(tmp_path / f"p{side}.tif", GRID, store, window, _disc(Window(0, 0, 2048, 2048)),
                        block_px=1024)
        tracemalloc.start()
        made = block_task(plan, 1, 1)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert isinstance(made, Made) and made.tiles
    block_px = 1024 * 1024
    assert peaks[1] < 1.1 * peaks[0], peaks
    assert peaks[1] < 8 * block_px, peaks  # a few bytes a pixel of the block
