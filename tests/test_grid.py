from __future__ import annotations

import pytest
from pyproj import CRS

from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import (
    CHINA_ALBERS,
    LONLAT,
    ChunkId,
    Grid,
    Window,
    geographic_grid,
    is_geographic,
    is_lonlat,
    metres_per_unit,
    resolve_crs,
)
from sinolc_dist.stages.workflow import load_workflow


def test_default_grid_covers_china_at_1m_albers():
    g = Grid()
    assert g.crs == CHINA_ALBERS
    assert g.resolution == 1.0
    assert g.chunks_shape == (1392, 1216)
    left, bottom, right, top = g.window_bounds(g.full_window)
    # China's Albers bounds: x -2.63e6..2.21e6, y 0.41e6..5.92e6
    assert left < -2.63e6 and right > 2.21e6 and bottom < 0.41e6 and top > 5.92e6


def test_chunk_ids_windows_bounds_and_transforms_agree():
    g = Grid(chunk=4096)
    cid = ChunkId(100, 200)
    w = g.chunk_window(cid)
    assert w == Window(409600, 819200, 413696, 823296)
    assert g.chunk_bounds(cid) == g.window_bounds(w)
    t = g.window_transform(w)
    assert (t.c, t.f) == (g.chunk_bounds(cid)[0], g.chunk_bounds(cid)[3])
    assert g.bounds_window(*g.chunk_bounds(cid)) == w
    assert g.chunk_at(w.row0 + 5, w.col1 - 1) == cid
    hw = g.halo_window(cid)
    assert (hw.height, hw.width) == (4096 + 32, 4096 + 32)
    assert g.halo_window(ChunkId(0, 0)).row0 == 0  # clipped, never padded
    assert Window(5, 6, 10, 20).grow(3) == Window(2, 3, 13, 23)  # grow alone does not clip
    assert g.shard_of(cid) == ChunkId(50, 100)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"chunk": 1000, "block": 512}, "not a multiple of the storage block"),
    ({"resolution": -1.0}, "resolution must be a positive"),
    ({"size": (0, 10)}, "size must be positive"),
    ({"halo": -1}, "halo must be >= 0"),
    ({"crs": "EPSG:999999"}, "not understood by PROJ"),
])
def test_bad_grids_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Grid(**kwargs)


def test_chunk_outside_the_grid_and_bad_ids():
    with pytest.raises(ConfigError, match="outside the grid"):
        Grid().chunk_window(ChunkId(10**6, 0))
    with pytest.raises(ConfigError, match="bad chunk id"):
        ChunkId.parse("c/x/1")
    assert ChunkId.parse("c/3/4") == ChunkId.parse("3/4") == ChunkId(3, 4)


def test_grid_round_trips_and_fingerprint():
    g = geographic_grid()
    assert Grid.from_dict(g.to_dict()) == g
    assert g.fingerprint == Grid.from_dict(g.to_dict()).fingerprint != Grid().fingerprint
    with pytest.raises(ConfigError, match="unknown grid keys"):
        Grid.from_dict({**g.to_dict(), "chunks": 3})


def test_geographic_workflow_defaults_to_china_in_degrees():
    wf = load_workflow("cn-geographic")
    assert wf.grid.pyproj_crs.is_geographic
    assert wf.grid.origin == (73.0, 54.0)
    assert wf.grid.resolution == pytest.approx(8.983e-6, rel=1e-3)


def test_crs_aliases_and_lonlat_have_one_meaning():
    assert resolve_crs("china-albers") == CHINA_ALBERS
    assert resolve_crs("EPSG:32650") == "EPSG:32650"  # anything else goes to PROJ as given
    assert is_geographic("EPSG:4326") and is_geographic("EPSG:4490") and is_geographic("+proj=longlat")
    assert not is_geographic("china-albers") and not is_geographic("EPSG:32650")
    assert not is_geographic("EPSG:99999")  # unknown to PROJ: Grid() says why
    assert is_lonlat(LONLAT) and is_lonlat("+proj=longlat +datum=WGS84 +no_defs")  # axis order aside
    assert not is_lonlat("EPSG:4490") and not is_lonlat(CHINA_ALBERS)


def test_nominal_pixel_in_metres_on_any_crs():
    """The one conversion of a grid pixel to metres: CRS units on a projection, degrees at the equator."""
    assert metres_per_unit(CRS.from_user_input(CHINA_ALBERS)) == 1.0  # a BoundCRS (+towgs84): its map's unit
    assert metres_per_unit(CRS.from_user_input("+proj=utm +zone=50 +units=ft")) == pytest.approx(0.3048)
    albers = Grid(resolution=2.0, chunk=512, block=512)
    assert (albers.nominal_pixel_m, albers.nominal_pixel_m2) == (2.0, 4.0)
    assert albers.nominal_chunk_km2 == pytest.approx(512**2 * 4 / 1e6, rel=1e-15)
    feet = Grid(crs="+proj=utm +zone=50 +units=ft", resolution=10.0, origin=(0.0, 1e7), size=(8, 8),
                chunk=8, block=8)
    assert feet.nominal_pixel_m == pytest.approx(3.048, rel=1e-12)
    lonlat = geographic_grid()
    assert lonlat.nominal_pixel_m == pytest.approx(1.0, rel=1e-12)  # 8.98e-6° is 1 m at the equator
    assert Grid(crs=LONLAT, resolution=1e-4, origin=(113.0, 29.0), size=(8, 8), chunk=8,
                block=8).nominal_pixel_m2 == pytest.approx(11.1319490793**2, rel=1e-9)
