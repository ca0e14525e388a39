"""prepare_demo: the scene in the input store, its truth GeoTIFF on the grid and its region file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer

from sinolc_dist.demo.run import DEMO_LONLAT, DEMO_SEED, prepare_demo, scene_window
from sinolc_dist.demo.scene import make_scene
from sinolc_dist.grid import LONLAT
from sinolc_dist.legend import SINOLC
from sinolc_dist.regions.region import resolve_region
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages.workflow import load_workflow

WORKFLOW = """
grid: {crs: china-albers, resolution: 1.0, chunk: 128, block: 64, shard: 2, halo: 16}
model: {patch: 64, device: cpu}
"""
SIZE = (256, 384)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    (tmp / "wf.yaml").write_text(WORKFLOW)
    rundir = RunDir(tmp / "run")
    scene = prepare_demo(rundir, str(tmp / "wf.yaml"), SIZE)
    return rundir, scene, load_workflow(str(tmp / "wf.yaml")).grid


def test_scene_window_is_chunk_aligned_one_chunk_off_the_shards():
    grid = load_workflow("demo").grid
    win = scene_window(grid)
    assert (win.height, win.width) == (2048, 2048)
    assert win.row0 % grid.chunk == 0 and win.col0 % grid.chunk == 0
    assert win.row0 % grid.shard_px == grid.chunk and win.col0 % grid.shard_px == grid.chunk
    x, y = Transformer.from_crs(LONLAT, grid.crs, always_xy=True).transform(*DEMO_LONLAT)
    col, row = ~grid.transform @ (x, y)
    # The scene starts one chunk past the corner of the shard holding DEMO_LONLAT.
    assert grid.chunk - grid.shard_px < win.row0 - row <= grid.chunk
    assert grid.chunk - grid.shard_px < win.col0 - col <= grid.chunk


def test_the_scene_is_in_the_input_store(prepared):
    rundir, scene, grid = prepared
    assert (scene.window.height, scene.window.width) == SIZE and scene.window == scene_window(grid, SIZE)
    rgb, _ = make_scene(*SIZE, DEMO_SEED)
    arr = stores.open_array(rundir.input, grid)
    assert arr.shape == (3, *grid.size)
    around = scene.window.grow(grid.chunk)
    got = stores.read_window(arr, around)
    inner = scene.window.within(around)
    assert np.array_equal(got[(slice(None), *inner)], np.maximum(rgb, 1))
    outside = np.ones(got.shape[1:], bool)
    outside[inner] = False
    assert not got[:, outside].any()  # nodata all round


def test_the_truth_is_a_georeferenced_geotiff_on_the_grid(prepared):
    _, scene, grid = prepared
    _, labels = make_scene(*SIZE, DEMO_SEED)
    with rasterio.open(scene.truth_file) as src:
        assert src.driver == "GTiff" and (src.height, src.width) == SIZE and src.count == 1
        assert src.crs == grid.pyproj_crs and src.nodata == 0
        assert src.transform == grid.window_transform(scene.window)
        assert grid.bounds_window(*src.bounds) == scene.window
        assert src.colormap(1)[5] == SINOLC.colormap()[5]
        assert np.array_equal(src.read(1), labels)


def test_the_region_file_is_the_scene_footprint_one_pixel_inside(prepared):
    _, scene, grid = prepared
    doc = json.loads(scene.region_file.read_text())
    (feature,) = doc["features"]
    footprint = shapely.geometry.shape(feature["geometry"])
    to_grid = Transformer.from_crs(LONLAT, grid.crs, always_xy=True)
    in_grid = shapely.transform(footprint, lambda xy: np.column_stack(to_grid.transform(*xy.T)))
    left, bottom, right, top = grid.window_bounds(scene.window)
    assert in_grid.bounds == pytest.approx((left + 1, bottom + 1, right - 1, top - 1), abs=1e-3)
    assert in_grid.area == pytest.approx((SIZE[0] - 2) * (SIZE[1] - 2), rel=1e-6)
    region = resolve_region(str(scene.region_file))
    assert region.kind == "file" and [p.adcode for p in region.provinces] == ["420000"]  # Hubei


def test_prepare_demo_writes_once(prepared):
    rundir, scene, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in (scene.truth_file, scene.region_file)}
    assert prepare_demo(rundir, str(rundir.root.parent / "wf.yaml"), SIZE) == scene
    assert {p: p.stat().st_mtime_ns for p in before} == before
