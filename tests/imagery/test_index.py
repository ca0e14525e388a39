"""The index: each source described once, what changed since last time, dates, kernel scales."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from affine import Affine

from sinolc_dist.errors import InputError
from sinolc_dist.grid import Window
from sinolc_dist.imagery.index import build_index, kernel_scale, parse_date, tiles_bounds
from sinolc_dist.imagery.sources import WEB_MERCATOR_HALF, CompositeOptions, ImageryIndex
from tests.imagery.imagery_factory import GRID, standard_scenes, write_scene, write_tiles


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return standard_scenes(tmp_path_factory.mktemp("index") / "scenes")


@pytest.mark.parametrize(("text", "iso"), [
    ("2019:06:01 10:00:00", "2019-06-01T10:00:00"),
    ("2021-05-01", "2021-05-01T00:00:00"),
    ("2023-03-01T08:00:00+08:00", "2023-03-01T00:00:00"),
    ("2023-03-01T00:00:00Z", "2023-03-01T00:00:00"),
    ("20200102", "2020-01-02T00:00:00"),
    ("yesterday", None),
    (None, None),
])
def test_parse_date(text, iso):
    assert parse_date(text) == iso


def test_index_describes_once_and_reports_changes(scenes, tmp_path):
    specs = [str(scenes[0].path.parent / "*.tif"), str(scenes[-1].path)]
    first = build_index(specs, GRID, CompositeOptions(), zoom=17)
    idx = first.index
    assert first.described == 5 and [os.path.basename(s.path) for s in idx.sources] == [
        "c_lonlat.tif", "b_utm50.tif", "a_utm49.tif", "d_uint16.tif", "tiles"]
    c, _, _, d, tiles = idx.sources
    assert c.band_indexes == (1, 2, 3) and d.dtype == "uint16" and tiles.tiles is not None
    assert tiles.tile_size == 256 and tiles.suffix == ".png"
    # Footprints are in the grid's CRS: every scene meets the grid.
    left, bottom, right, top = GRID.window_bounds(GRID.full_window)
    assert all(s.bounds[0] < right and s.bounds[2] > left and s.bounds[1] < top and s.bounds[3] > bottom
               for s in idx.sources)
    path = tmp_path / "index.json"
    idx.save(path)
    loaded = ImageryIndex.load(path)
    assert loaded == idx
    again = build_index(specs, GRID, CompositeOptions(), zoom=17, previous=loaded)
    assert again.described == 0 and again.changed == [] and again.index.sources == idx.sources
    # A modified file is described again and its footprint reported as changed.
    os.utime(scenes[2].path, (1, 1))
    changed = build_index(specs, GRID, CompositeOptions(), zoom=17, previous=loaded)
    assert changed.described == 1 and changed.changed == [scenes_bounds(loaded, "a_utm49.tif")] * 2


def scenes_bounds(index: ImageryIndex, name: str):
    return next(s.bounds for s in index.sources if s.path.endswith(name))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_bad_inputs_are_refused(tmp_path):
    plain = tmp_path / "nocrs.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8") as ds:
        ds.write(np.ones((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"nocrs\.tif has no CRS"):
        build_index([str(plain)], GRID, CompositeOptions())
    gray = write_scene(tmp_path / "gray.tif", "EPSG:32650", Window(0, 0, 64, 64), 1.0, 7)
    with rasterio.open(gray.path) as src:
        profile = src.profile | {"count": 1}
        band = src.read(1)
    with rasterio.open(gray.path, "w", **profile) as dst:
        dst.write(band, 1)
    with pytest.raises(InputError, match=r"gray\.tif has 1 image band"):
        build_index([str(gray.path)], GRID, CompositeOptions())
    rgb = write_scene(tmp_path / "rgb.tif", "EPSG:32650", Window(0, 0, 64, 64), 1.0, 8)
    with pytest.raises(InputError, match=r"rgb\.tif has 3 image band\(s\) \(red, green, blue\) but the model "
                       r"takes 4: give imagery with the model's 4 bands.*a model for 3-band imagery") as err:
        build_index([str(rgb.path)], GRID, CompositeOptions(bands=4))
    assert "give RGB" not in str(err.value)


def test_tile_sets_are_rescanned_for_changed_tiles(tmp_path):
    tiles = write_tiles(tmp_path / "xyz", Window(600, 600, 1000, 1000), 5)
    opts = CompositeOptions()
    first = build_index([str(tiles.path)], GRID, opts, 17)
    src = first.index.sources[0]
    files = sorted((tiles.path / "17").glob("*/*.png"))
    assert src.size == len(files) > 2
    same = build_index([str(tiles.path)], GRID, opts, 17, first.index)
    assert same.described == 0 and same.changed == []
    # One tile written again in place: only its footprint changed.
    victim = files[-1]
    victim.write_bytes(victim.read_bytes())
    os.utime(victim, (src.mtime + 5, src.mtime + 5))
    again = build_index([str(tiles.path)], GRID, opts, 17, first.index)
    x, y = int(victim.parent.name), int(victim.stem)
    merc = tiles_bounds(17, (x, y, x, y))
    assert again.described == 1 and len(again.changed) == 1
    assert again.changed[0] == pytest.approx(rasterio.warp.transform_bounds("EPSG:3857", GRID.crs, *merc,
                                                                            densify_pts=21))
    # A tile removed: its x column (the directory changed) is redone.
    files[0].unlink()
    os.utime(files[0].parent, (src.mtime + 9, src.mtime + 9))
    gone = build_index([str(tiles.path)], GRID, opts, 17, again.index)
    assert gone.index.sources[0].size == len(files) - 1 and len(gone.changed) >= 1


def test_tiles_bounds_cut_the_web_mercator_square():
    h = WEB_MERCATOR_HALF
    assert tiles_bounds(0, (0, 0, 0, 0)) == pytest.approx((-h, -h, h, h))
    assert tiles_bounds(1, (1, 0, 1, 0)) == pytest.approx((0, 0, h, h))  # north-east quarter
    assert tiles_bounds(2, (0, 2, 3, 3)) == pytest.approx((-h, -h, h, 0))  # the southern half


def test_kernel_scale_is_destination_pixels_per_source_pixel():
    left, _, _, top = GRID.window_bounds(GRID.full_window)
    # A source on the grid's own CRS with 2 m pixels covers 2 grid pixels each way; 0.5 m ones half of one.
    coarse = kernel_scale(GRID.crs, Affine(2.0, 0, left, 0, -2.0, top), 10, 10, GRID)
    fine = kernel_scale(GRID.crs, Affine(0.5, 0, left, 0, -0.5, top), 10, 10, GRID)
    assert coarse == pytest.approx((2.0, 2.0)) and fine == pytest.approx((0.5, 0.5))
    # Anisotropic pixels keep their two scales apart.
    assert kernel_scale(GRID.crs, Affine(3.0, 0, left, 0, -1.0, top), 0, 0, GRID) == pytest.approx((3.0, 1.0))
