"""Class areas: true pixel areas on any grid CRS, areas counted by the mosaic, the tables."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import CRS, Geod, Transformer

from sinolc_dist.deliver.cog import AREAS_TAG, class_areas, write_cog
from sinolc_dist.deliver.stats import PixelAreas, ProvinceAreas, area_method, class_km2, write_tables
from sinolc_dist.errors import InputError
from sinolc_dist.grid import CHINA_ALBERS, DEGREE_METRE, Grid, Window
from sinolc_dist.regions.region import resolve_region
from sinolc_dist.rundir.stores import create_store, read_window, write_window
from tests.regions.ellipsoid import grs80_cell_km2

WGS84 = Geod(ellps="WGS84")
#: Hubei's land area as published by the province (18.59 万 km²).
HUBEI_KM2 = 185_900.0
#: A geographic grid of 1e-4° pixels (about 10 m) north of Changsha.
LONLAT = Grid(crs="EPSG:4326", resolution=1e-4, origin=(113.0, 29.0), size=(600, 500),
              chunk=128, block=64, shard=2, halo=11)


def geodesic_km2(lons: np.ndarray, lats: np.ndarray) -> float:
    area, _ = WGS84.polygon_area_perimeter(lons, lats)
    return abs(area) / 1e6


def row_km2_geod(grid: Grid, rows: np.ndarray) -> np.ndarray:
    """Area of one pixel in each row by the geodesic polygon of its corners (independent of stats.py)."""
    x0, y0, r = grid.origin[0], grid.origin[1], grid.resolution
    return np.array([geodesic_km2(np.array([x0, x0 + r, x0 + r, x0]),
                                  np.array([y0 - i * r, y0 - i * r, y0 - (i + 1) * r, y0 - (i + 1) * r]))
                     for i in rows])


def pixel_km2_geod(grid: Grid, win: Window) -> np.ndarray:
    """Area of every pixel of a window by the geodesic polygon of its corners (independent of stats.py)."""
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    t = grid.window_transform(win)
    out = np.empty((win.height, win.width))
    for i in range(win.height):
        for j in range(win.width):
            xs = t.c + np.array([j, j + 1, j + 1, j]) * t.a
            ys = t.f + np.array([i, i, i + 1, i + 1]) * t.e
            out[i, j] = geodesic_km2(*to_lonlat.transform(xs, ys))
    return out


def test_area_methods():
    assert area_method(CRS.from_user_input(CHINA_ALBERS)) == "constant"
    assert area_method(CRS.from_epsg(4326)) == "rows"
    assert area_method(CRS.from_epsg(4490)) == "rows"  # CGCS2000 geographic
    assert area_method(CRS.from_epsg(32649)) == "pixels"  # UTM 49N
    assert area_method(CRS.from_epsg(6933)) == "constant"  # EASE-Grid 2.0, cylindrical equal area


def test_constant_area_on_an_equal_area_grid():
    areas = PixelAreas(Grid(resolution=2.0, chunk=512, block=512))
    assert areas.constant_km2 == pytest.approx(4e-6, rel=1e-15)
    np.testing.assert_array_equal(areas.rows_km2(Window(0, 0, 3, 5)), np.full(3, 4e-6))
    feet = PixelAreas(Grid(crs="+proj=aea +lat_1=25 +lat_2=47 +lon_0=105 +ellps=GRS80 +units=us-ft",
                           resolution=10.0, origin=(0.0, 5e6), size=(8, 8), chunk=8, block=8))
    assert feet.method == "constant"
    assert feet.constant_km2 == pytest.approx((10 * 1200 / 3937) ** 2 / 1e6, rel=1e-12)  # the US survey foot


@pytest.mark.parametrize("lat", [19.0, 31.0, 53.0])
@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:4490"])
def test_a_one_degree_cell_has_its_area_on_grs80(crs, lat):
    """Pixels of a 1° x 1° cell sum to the closed-formula area of the cell on the ellipsoid."""
    expected = grs80_cell_km2(lat - 1, lat, 1.0)
    for n, rtol in ((1, 1e-4), (10, 1e-6)):  # straight pixel edges in Albers: 1.7e-5 for one 1° pixel
        grid = Grid(crs=crs, resolution=1 / n, origin=(110.0, lat), size=(n, n), chunk=512, block=512)
        got = PixelAreas(grid).pixels_km2(grid.full_window).sum()
        assert got == pytest.approx(expected, rel=rtol)
    assert 7_000 < grs80_cell_km2(52, 53, 1) < grs80_cell_km2(18, 19, 1) < 12_000  # the formula's scale


def test_a_province_sums_to_its_published_area():
    """Hubei's 0.01° pixels (centres inside the bundled boundary) sum to its published area, within 0.5 %."""
    geometry = resolve_region("Hubei", None).geometry
    grid = Grid(crs="EPSG:4326", resolution=0.01, origin=(108.0, 34.0), size=(500, 900),
                chunk=512, block=512)
    left, bottom, right, top = geometry.bounds
    assert left > 108.0 and top < 34.0 and right < 117.0 and bottom > 29.0  # the grid holds the province
    rows, cols = np.mgrid[0:500, 0:900]
    inside = shapely.contains_xy(geometry, 108.0 + (cols + 0.5) * 0.01, 34.0 - (rows + 0.5) * 0.01)
    km2 = class_km2(PixelAreas(grid), grid.full_window, inside.astype(np.uint8))
    assert km2[1] == pytest.approx(HUBEI_KM2, rel=5e-3)
    # Counting the pixels at their size on the equator would overstate it by 1 / cos(31°) ≈ 17 %.
    assert inside.sum() * (0.01 / DEGREE_METRE) ** 2 / 1e6 > 1.1 * km2[1]


@pytest.mark.parametrize("lat", [18.0, 35.0, 53.0])
def test_row_areas_on_the_national_lonlat_grid_match_geodesic_areas(lat):
    grid = Grid(crs="EPSG:4326", resolution=DEGREE_METRE, origin=(100.0, lat), size=(1000, 10),
                chunk=512, block=512)
    rows = np.array([0, 1, 500, 999])
    got = PixelAreas(grid).rows_km2(Window(0, 0, 1000, 10))[rows]
    np.testing.assert_allclose(got, row_km2_geod(grid, rows), rtol=1e-7)
    # A "1 m" pixel of SinoLC-1's EPSG:4326 files is about cos(lat) m².
    assert got[0] * 1e6 == pytest.approx(np.cos(np.radians(lat)), rel=0.01)


def test_pixel_areas_on_utm_match_geodesic_areas():
    grid = Grid(crs="EPSG:32649", resolution=10.0, origin=(300_000.0, 3_400_000.0),
                size=(300, 200), chunk=128, block=64)
    win = Window(100, 50, 103, 53)
    got = PixelAreas(grid).pixels_km2(win)
    np.testing.assert_allclose(got, pixel_km2_geod(grid, win), rtol=1e-6)
    assert not np.allclose(got, 1e-4)  # UTM is not equal-area: scale 0.9996 and more


def test_class_km2_weights_rows_and_pixels():
    rng = np.random.default_rng(5)
    data = rng.integers(0, 12, size=(300, 40)).astype(np.uint8)
    win = Window(10, 20, 310, 60)
    rows = row_km2_geod(LONLAT, np.arange(win.row0, win.row1))
    expected = np.zeros(256)
    np.add.at(expected, data, np.broadcast_to(rows[:, None], data.shape))
    np.testing.assert_allclose(class_km2(PixelAreas(LONLAT), win, data), expected, rtol=1e-7)
    utm_grid = Grid(crs="EPSG:32649", resolution=10.0, origin=(300_000.0, 3_400_000.0),
                    size=(400, 100), chunk=128, block=64)
    expected = np.zeros(256)
    np.add.at(expected, data, pixel_km2_geod(utm_grid, win))
    np.testing.assert_allclose(class_km2(PixelAreas(utm_grid), win, data), expected, rtol=1e-6)  # 2 strips


def test_mosaic_areas_on_a_lonlat_grid_equal_a_direct_count(tmp_path):
    arr = create_store(tmp_path / "output.zarr", LONLAT, "output")
    rng = np.random.default_rng(11)
    patches = rng.integers(1, 12, size=(75, 63))
    write_window(arr, LONLAT.full_window,
                 np.kron(patches, np.ones((8, 8), np.int64))[:600, :500].astype(np.uint8))
    window = Window(40, 30, 560, 470)
    # Vertices off the 1e-4° lattice, so no edge runs exactly through pixel centres.
    triangle = shapely.Polygon([(113.0051371, 28.9948733), (113.0467129, 28.9902317),
                                (113.0103743, 28.9456171)])
    report = write_cog(tmp_path / "p.tif", LONLAT, arr, window, mask_geometry=triangle)

    x0, y0 = LONLAT.origin
    rows, cols = np.arange(window.row0, window.row1), np.arange(window.col0, window.col1)
    xs, ys = np.meshgrid(x0 + (cols + 0.5) * 1e-4, y0 - (rows + 0.5) * 1e-4)
    inside = shapely.contains_xy(triangle, xs, ys)
    data = read_window(arr, window)
    weights = np.broadcast_to(row_km2_geod(LONLAT, rows)[:, None], data.shape)
    expected = np.bincount(data[inside], weights=weights[inside], minlength=12)
    assert sorted(report.class_km2) == list(range(1, 12))
    np.testing.assert_allclose([report.class_km2[c] for c in range(1, 12)], expected[1:], rtol=1e-6)
    with rasterio.open(report.path) as src:
        tagged = {int(k): v for k, v in json.loads(src.tags()[AREAS_TAG]).items()}
    assert tagged == report.class_km2
    recount = class_areas(LONLAT, arr, window, triangle)
    assert recount.keys() == report.class_km2.keys()
    np.testing.assert_allclose(list(recount.values()), list(report.class_km2.values()), rtol=1e-12)


def test_tables(tmp_path):
    rows = [ProvinceAreas("420000", "Hubei", "湖北省", True, "420000_Hubei.tif", {1: 1.5, 9: 2.0},
                          "0:0-2", 3, 1, 0.5),
            ProvinceAreas("430000", "Hunan", "湖南省", False, "430000_Hunan.tif", {9: 0.5, 12: 0.25})]
    csv_path, json_path = write_tables(tmp_path / "stats", rows, {"run_id": "r1"})
    with open(csv_path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0][-6:] == ["Moss and lichen", "code 12", "total", "chunks", "no_imagery_chunks",
                             "imagery_share"]
    assert table[-1][:4] == ["", "total", "合计", "no"]
    assert float(table[-1][table[0].index("Water")]) == 2.5 and float(table[-1][-4]) == 4.25
    assert table[1][-3:] == ["3", "1", "0.500000"] and table[2][-3:] == ["0", "0", ""]  # unknown: empty
    assert table[-1][-3:] == ["3", "1", "0.500000"]  # a file that does not say is left out of the share
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert doc["run_id"] == "r1" and doc["classes"]["12"] == "code 12"
    assert doc["provinces"][1]["km2"]["12"] == 0.25 and doc["total"]["total"] == 4.25
    assert doc["provinces"][0]["chunks"] == "0:0-2" and doc["provinces"][1]["imagery_share"] is None
    assert doc["total"]["chunk_count"] == 3 and doc["total"]["imagery_share"] == 0.5
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="statistics folder"):
        write_tables(tmp_path / "file" / "stats", rows, {})
