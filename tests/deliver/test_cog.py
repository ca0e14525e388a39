from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from conftest import assert_valid_cog, fill_disk
from pyproj import CRS, Transformer
from rio_cogeo.cogeo import cog_validate

from sinolc_dist.deliver.cog import CRS_TAG, CogReport, class_areas, union_window, write_cog
from sinolc_dist.deliver.pyramid import mode2
from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import CHINA_ALBERS, DEGREE_METRE, ChunkId, Grid, Window
from sinolc_dist.legend import SINOLC
from sinolc_dist.rundir.stores import create_store, read_window, write_window

GRID = Grid(
    crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0),
    size=(3000, 2500), chunk=512, block=256, shard=2, halo=16,
)


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    """An output store with class codes 1..11 in most shards; shard (0, 1) stays empty."""
    arr = create_store(tmp_path_factory.mktemp("store") / "output.zarr", GRID, "output")
    rng = np.random.default_rng(7)
    rows, cols = (-(-n // GRID.shard_px) for n in GRID.size)
    for srow in range(rows):
        for scol in range(cols):
            if (srow, scol) == (0, 1):
                continue
            win = GRID.shard_window(ChunkId(srow, scol))
            patches = rng.integers(1, 12, size=(-(-win.height // 8), -(-win.width // 8)))
            data = np.kron(patches, np.ones((8, 8), dtype=np.int64))[: win.height, : win.width]
            write_window(arr, win, data.astype(np.uint8))
    return arr


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _centres_inside(geometry, window: Window) -> np.ndarray:
    x0, y0 = GRID.origin
    cols = np.arange(window.col0, window.col1) + 0.5
    rows = np.arange(window.row0, window.row1) + 0.5
    xs, ys = np.meshgrid(x0 + cols * GRID.resolution, y0 - rows * GRID.resolution)
    return shapely.contains_xy(geometry, xs, ys)


def test_cog_matches_store_inside_polygon(classes, tmp_path):
    window = union_window(GRID, [ChunkId(r, c) for r in range(1, 5) for c in range(4)])
    assert window == Window(512, 0, 2560, 2048)
    left, bottom, right, top = GRID.window_bounds(window)
    triangle = shapely.Polygon([
        (left + 100.3, top - 50.7), (right - 80.1, top - 300.2), (left + 700.9, bottom + 60.4),
    ])
    dst = tmp_path / "out" / "Province.tif"
    report = write_cog(dst, GRID, classes, window, mask_geometry=triangle,
                       tags={"PROVINCE": "Test", "ADCODE": "990000"})

    assert isinstance(report, CogReport)
    assert (report.path, report.width, report.height) == (dst, 2048, 2048)
    assert report.valid
    assert report.bytes == dst.stat().st_size
    assert report.sha256 == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert report.overviews == [2, 4]
    with rasterio.open(dst) as src:
        assert CRS.from_wkt(src.crs.to_wkt()).equals(GRID.pyproj_crs)
        assert src.transform == GRID.window_transform(window)
        assert (src.nodata, src.dtypes) == (0, ("uint8",))
        assert src.block_shapes == [(512, 512)]
        assert src.overviews(1) == [2, 4]
        cmap = src.colormap(1)
        assert {k: cmap[k] for k in range(1, 12)} == {k: SINOLC.colormap()[k] for k in range(1, 12)}
        assert cmap[0][3] == 0
        tags = src.tags()
        assert (tags["PROVINCE"], tags["OVERVIEW_RESAMPLING"]) == ("Test", "MODE")
        assert json.loads(tags["CLASS_NAMES"]) == {str(k): v for k, v in SINOLC.class_names().items()}
        assert src.tags(1)["CLASS_9"] == "Water"
        assert src.descriptions[0].startswith("land-cover class")
        data = src.read(1)
    assert_valid_cog(dst)

    inside = _centres_inside(triangle, window)
    assert 0 < inside.sum() < inside.size
    expected = np.where(inside, read_window(classes, window), 0)
    np.testing.assert_array_equal(data, expected)
    assert sorted(os.listdir(dst.parent)) == ["Province.tif"]


def test_window_cut_by_grid_edge_is_clipped(classes, tmp_path):
    window = Window(2600, 2100, 3600, 3100)
    clipped = Window(2600, 2100, 3000, 2500)
    report = write_cog(tmp_path / "edge.tif", GRID, classes, window)
    assert (report.width, report.height, report.overviews) == (400, 400, [])
    with rasterio.open(report.path) as src:
        assert src.transform == GRID.window_transform(clipped)
        assert src.shape == (400, 400)
    np.testing.assert_array_equal(_read(report.path), read_window(classes, clipped))
    assert_valid_cog(report.path)


def test_window_not_aligned_to_chunks(classes, tmp_path):
    window = Window(301, 777, 1711, 2013)  # crosses the empty shard and four chunk rows
    report = write_cog(tmp_path / "odd.tif", GRID, classes, window)
    with rasterio.open(report.path) as src:
        assert src.transform == GRID.window_transform(window)
    np.testing.assert_array_equal(_read(report.path), read_window(classes, window))
    assert_valid_cog(report.path)


@pytest.mark.parametrize(("window", "tile", "overviews"), [
    # The image itself is one 512 px tile wide; 256 px tiles allow no 256 x 800 overview.
    (Window(0, 0, 1600, 512), 256, []),
    # 512 px tiles would need a 512 x 800 overview.
    (Window(0, 0, 1600, 1024), 256, [2, 4]),
])
def test_narrow_windows_still_validate(classes, tmp_path, window, tile, overviews):
    report = write_cog(tmp_path / "narrow.tif", GRID, classes, window)
    with rasterio.open(report.path) as src:
        assert src.block_shapes[0][1] == tile
        for level in range(len(report.overviews)):
            with rasterio.open(report.path, OVERVIEW_LEVEL=level) as ovr:
                assert not (ovr.width == ovr.block_shapes[0][1] and ovr.height > 512)
    assert_valid_cog(report.path)
    data = read_window(classes, window)
    np.testing.assert_array_equal(_read(report.path), data)
    assert report.overviews == overviews  # the mode of 8 px class patches is the patch's class
    for level, factor in enumerate(report.overviews):
        with rasterio.open(report.path, OVERVIEW_LEVEL=level) as ovr:
            np.testing.assert_array_equal(ovr.read(1), data[::factor, ::factor])


def test_compression_threads_write_the_same_bytes(classes, tmp_path):
    window = Window(0, 0, 2048, 2048)
    one = write_cog(tmp_path / "one.tif", GRID, classes, window, threads=1)
    every = write_cog(tmp_path / "all.tif", GRID, classes, window, threads="ALL_CPUS")
    assert one.sha256 == every.sha256 and one.path.read_bytes() == every.path.read_bytes()


def test_union_window_and_bad_windows(classes, tmp_path):
    assert union_window(GRID, [ChunkId(5, 4), ChunkId(2, 1)]) == Window(1024, 512, 3000, 2500)
    with pytest.raises(ConfigError, match="no chunks"):
        union_window(GRID, [])
    with pytest.raises(ConfigError, match="does not overlap the grid"):
        write_cog(tmp_path / "x.tif", GRID, classes, Window(5000, 0, 6000, 512))
    with pytest.raises(ConfigError, match="Polygon"):
        write_cog(tmp_path / "x.tif", GRID, classes, Window(0, 0, 512, 512),
                  mask_geometry=shapely.Point(1_000_100.0, 3_499_900.0))
    assert list(tmp_path.iterdir()) == []


def test_destination_under_a_file_is_an_input_error(classes, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(InputError, match="taken"):
        write_cog(tmp_path / "taken" / "p.tif", GRID, classes, Window(0, 0, 512, 512))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_read_only_destination_is_an_input_error(classes, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user may write to read-only folders (root)")
        with pytest.raises(InputError, match="not writable"):
            write_cog(folder / "p.tif", GRID, classes, Window(0, 0, 512, 512))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


class _FullDisk:
    """The store's indexing interface, failing like a full disk on the n-th read."""

    def __init__(self, arr, fail_on: int) -> None:
        self.arr, self.fail_on, self.calls = arr, fail_on, 0

    def __getitem__(self, key):
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError(28, "No space left on device")
        return self.arr[key]


def test_failure_mid_write_leaves_nothing(classes, tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    dst = out / "p.tif"
    failing = _FullDisk(classes, fail_on=3)
    with pytest.raises(InputError, match=r"p\.tif.*nothing was left"):
        write_cog(dst, GRID, failing, Window(0, 0, 1024, 1024), scratch_dir=scratch)
    assert failing.calls == 3
    assert list(out.iterdir()) == []
    assert list(scratch.iterdir()) == []

    dst.write_bytes(b"previous mosaic")
    with pytest.raises(InputError, match="No space left"):
        write_cog(dst, GRID, _FullDisk(classes, fail_on=2), Window(0, 0, 1024, 1024))
    assert dst.read_bytes() == b"previous mosaic"
    assert [p.name for p in out.iterdir()] == ["p.tif"]


def test_reprojected_to_lonlat_by_nearest_neighbour(classes, tmp_path):
    window = Window(512, 512, 1536, 1536)
    report = write_cog(tmp_path / "lonlat.tif", GRID, classes, window, crs="EPSG:4326",
                       tags={"PROVINCE": "Test"})
    assert_valid_cog(report.path)
    with rasterio.open(report.path) as src:
        assert src.crs.to_epsg() == 4326
        t = src.transform
        assert (t.a, t.e) == pytest.approx((DEGREE_METRE, -DEGREE_METRE), rel=1e-12)
        # On the lattice of the national EPSG:4326 grid, so provinces line up.
        for steps in ((t.c - 73.0) / DEGREE_METRE, (54.0 - t.f) / DEGREE_METRE):
            assert abs(steps - round(steps)) < 1e-6
        assert src.nodata == 0 and src.colormap(1)[9] == SINOLC.colormap()[9]
        assert (src.tags()["PROVINCE"], src.tags()[CRS_TAG]) == ("Test", "EPSG:4326")
        assert src.tags(1)["CLASS_9"] == "Water"
        data = src.read(1)
        rows, cols = np.mgrid[0:src.height, 0:src.width]
        lon, lat = t @ (cols + 0.5, rows + 0.5)
    x, y = Transformer.from_crs("EPSG:4326", GRID.crs, always_xy=True).transform(lon, lat)
    src_row = np.floor(GRID.origin[1] - y).astype(int)
    src_col = np.floor(x - GRID.origin[0]).astype(int)
    within = ((src_row >= window.row0) & (src_row < window.row1)
              & (src_col >= window.col0) & (src_col < window.col1))
    store = read_window(classes, GRID.full_window)
    expected = np.where(within, store[src_row.clip(0, 2999), src_col.clip(0, 2499)], 0)
    # GDAL's warper approximates the transformation to 1/8 px: a pixel centre within that
    # of a source pixel's edge may take the neighbour's class (0.1 % of pixels here).
    assert (data == expected).mean() > 0.998
    off = np.flatnonzero((data != expected).ravel() & within.ravel())
    r, c = src_row.ravel()[off], src_col.ravel()[off]
    neighbours = np.stack([store[r + dr, c + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
    assert (neighbours == data.ravel()[off]).any(axis=0).all()
    assert within.mean() > 0.5
    assert report.class_km2 == pytest.approx(class_areas(GRID, classes, window), rel=1e-12)


def test_areas_counted_while_writing(classes, tmp_path):
    window = Window(300, 200, 1400, 1900)
    box = shapely.box(*GRID.window_bounds(window))
    disc = box.centroid.buffer(500.37)
    report = write_cog(tmp_path / "disc.tif", GRID, classes, window, mask_geometry=disc)
    data = read_window(classes, window)[_centres_inside(disc, window)]
    expected = np.bincount(data, minlength=12) * 1e-6
    assert report.class_km2 == {c: pytest.approx(expected[c], rel=1e-12) for c in range(1, 12)}
    assert class_areas(GRID, classes, window, disc) == pytest.approx(report.class_km2, rel=1e-12)
    with pytest.raises(ConfigError, match="EPSG:99999"):
        write_cog(tmp_path / "x.tif", GRID, classes, window, crs="EPSG:99999")


def test_overviews_are_the_class_mode_level_by_level(tmp_path):
    grid = Grid(crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0),
                size=(1600, 1500), chunk=256, block=128, shard=2, halo=11)
    arr = create_store(tmp_path / "random.zarr", grid, "output")
    rng = np.random.default_rng(9)
    write_window(arr, grid.full_window, rng.integers(0, 12, size=grid.size).astype(np.uint8))
    window = Window(3, 5, 1598, 1499)  # odd sides: the last overview pixels cover 1 or 2 rows
    report = write_cog(tmp_path / "r.tif", grid, arr, window)
    assert report.overviews == [2, 4]  # 1595 x 1494 -> 798 x 747 -> 399 x 374
    expected = read_window(arr, window)
    for level, _ in enumerate(report.overviews):
        expected = mode2(expected)
        with rasterio.open(report.path, OVERVIEW_LEVEL=level) as ovr:
            np.testing.assert_array_equal(ovr.read(1), expected)
    assert_valid_cog(report.path)


@pytest.mark.slow
def test_a_disk_that_fills_gives_a_whole_cog_or_one_error_and_nothing(classes, tmp_path, tmpfs, capfd):
    """Issue 15: GDAL's libtiff printed a line per failed write, and GDAL finished COGs whose tiles were
    never written (with 2.5 to 3.25 times the file's size free): on a disk full at 17 points, each
    write is a whole, valid COG or one clear error leaving nothing."""
    window = Window(0, 0, 1024, 1536)
    reference = write_cog(tmp_path / "p.tif", GRID, classes, window)
    with rasterio.open(reference.path) as src:
        expected = src.read(1)
    outcomes = []
    for leave in (reference.bytes * k // 4 for k in range(17)):  # about 3x the COG is needed while writing
        (tmpfs / "filler").unlink(missing_ok=True)
        fill_disk(tmpfs, leave=leave)
        dst = tmpfs / "mosaics" / "p.tif"
        try:
            report = write_cog(dst, GRID, classes, window)
        except InputError as exc:
            message = str(exc)
            assert message.startswith(f"writing {dst} failed (") and "nothing was left" in message
            assert f"{dst.parent} has " in message and "iB free; the file needs roughly" in message
            assert list(dst.parent.iterdir()) == []
            outcomes.append("error")
            continue
        with rasterio.open(report.path) as src:  # every tile there and readable
            np.testing.assert_array_equal(src.read(1), expected)
        assert cog_validate(report.path, quiet=True)[0]
        dst.unlink()
        outcomes.append("written")
    assert outcomes[0] == "error" and outcomes[-1] == "written", outcomes
    printed = capfd.readouterr()
    assert "_tiff" not in printed.err + printed.out and "No space" not in printed.err + printed.out
