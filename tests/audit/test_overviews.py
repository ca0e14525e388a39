"""A repaired COG's overview levels: made in one pass by nearest decimation, handed to GDAL's COG driver."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate
from synthetic import duplicate, land_cover, write_map

import sinolc_dist.audit.overviews as overviews
import sinolc_dist.audit.repair as repair_module
from sinolc_dist.audit.overviews import decimate
from sinolc_dist.audit.repair import parse_strip, repair
from sinolc_dist.cog_layout import layout
from sinolc_dist.errors import InputError


def nearest_lines(n: int, factor: int) -> np.ndarray:
    """The source line of each level line: the one nearest its centre, the last where that is past the end."""
    return np.minimum(np.arange(-(-n // factor)) * factor + factor // 2, n - 1)


@pytest.mark.parametrize("factor", [2, 4, 8, 1024])
@pytest.mark.parametrize("shape", [(16, 24), (9, 10), (10, 9), (13, 7), (300, 5)])
def test_each_level_pixel_is_the_source_pixel_nearest_its_centre(factor, shape):
    data = np.arange(np.prod(shape)).reshape(shape)
    want = data[np.ix_(nearest_lines(shape[0], factor), nearest_lines(shape[1], factor))]
    assert np.array_equal(decimate(data, factor, want.shape), want)


def test_the_levels_are_the_repaired_map_decimated_whatever_the_block(tmp_path, monkeypatch):
    original = land_cover(2100, 2300, 7)
    write_map(tmp_path / "m.tif", duplicate(original, 1, 1500, 300))
    monkeypatch.setattr(overviews, "BLOCK", 512)  # several blocks each way, and a partial last one
    repair(tmp_path / "m.tif", tmp_path / "fixed.tif", [parse_strip("columns:1500:1800")])
    tile, factors = layout(2300, 2100)
    assert factors == [2, 4, 8]
    with rasterio.open(tmp_path / "fixed.tif") as dst:
        assert dst.overviews(1) == factors and dst.block_shapes == [(tile, tile)]
        assert dst.tags()["OVERVIEW_RESAMPLING"] == "NEAREST"
        assert np.array_equal(dst.read(1), original)
        for factor in factors:
            shape = (-(-2100 // factor), -(-2300 // factor))
            level = dst.read(1, out_shape=shape)  # GDAL reads an exact overview level as stored
            want = original[np.ix_(nearest_lines(2100, factor), nearest_lines(2300, factor))]
            assert np.array_equal(level, want), factor
    assert cog_validate(tmp_path / "fixed.tif", quiet=True)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.tif", "m.tif"]  # no level file left


def test_a_map_of_one_tile_gets_no_overviews(tmp_path):
    original = land_cover(400, 500, 3)
    write_map(tmp_path / "m.tif", duplicate(original, 0, 200, 40))
    repair(tmp_path / "m.tif", tmp_path / "fixed.tif", [parse_strip("rows:200:240")])
    with rasterio.open(tmp_path / "fixed.tif") as dst:
        assert dst.overviews(1) == [] and np.array_equal(dst.read(1), original)
    assert cog_validate(tmp_path / "fixed.tif", quiet=True)[0]


@pytest.mark.parametrize("room", [0.3, 0.6, 1.0, 1.4])
def test_a_disk_that_fills_while_levels_or_cog_are_written_leaves_nothing(tmpfs, monkeypatch, room):
    from conftest import fill_disk

    noisy = np.random.default_rng(1).integers(1, 11, (3000, 3000)).astype(np.uint8)  # ~4 MB compressed
    write_map(tmpfs / "m.tif", noisy)
    monkeypatch.setattr(repair_module, "_SPACE", {"cog": 0.0, "gtiff": 0.0})  # past the check: a real fill
    fill_disk(tmpfs, leave=int(room * (tmpfs / "m.tif").stat().st_size))
    with pytest.raises(InputError, match=r"writing .*fixed.tif failed \(.*No space left on device.*\); "
                                         r"nothing was left under that name"):
        repair(tmpfs / "m.tif", tmpfs / "fixed.tif", [parse_strip("columns:600:700")])
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "m.tif"]
