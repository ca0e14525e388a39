"""One window from the sources equals rasterio's warp of the same files; the compositing rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning

from sinolc_dist.grid import Window
from sinolc_dist.imagery.index import build_index
from sinolc_dist.imagery.sources import CompositeOptions
from sinolc_dist.imagery.warp import fill_window, read_window
from tests.imagery.imagery_factory import GRID, Scene, coverage, reference, standard_scenes, write_tiles


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return standard_scenes(tmp_path_factory.mktemp("warp") / "scenes")


def index_of(scenes, **options):
    folder = scenes[0].path.parent
    specs = [str(folder / "*.tif"), str(folder.parent / "tiles")]
    return build_index(specs, GRID, CompositeOptions(**options), zoom=17).index


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic", "average"])
def test_window_equals_reprojected_files(scenes, resampling):
    """UTM 49 and 50, lon/lat, uint16, RGBA, a masked hole and XYZ tiles, over the whole grid."""
    idx = index_of(scenes, resampling=resampling)
    got = read_window(idx, GRID, GRID.full_window)
    expected = reference(scenes, GRID.full_window, resampling)
    # Exact for every resampling: only the needed part of each file is read, with the kernel's margin.
    assert np.array_equal(got, expected)


def test_nodata_exactly_where_no_file_covers(scenes):
    got = read_window(index_of(scenes, resampling="nearest"), GRID, GRID.full_window)
    covered, ambiguous = coverage(scenes, GRID.full_window)
    assert (~covered).sum() > 50_000  # the gap and the masked hole are there
    assert np.array_equal(got.any(axis=0)[~ambiguous], covered[~ambiguous])
    assert ambiguous.mean() < 0.25


def test_pixel_rules(scenes):
    d = scenes[3]
    got = read_window(index_of(scenes, resampling="nearest"), GRID, GRID.full_window)
    # C's valid black pixels are kept as (1, 1, 1), not nodata.
    ones = (got == 1).all(axis=0)
    assert 100 < ones.sum() < 600
    # Alone, the uint16 scene is value // 256 and alpha-0 pixels of C are nodata.
    win = Window(800, 0, 1024, 256)
    only_d = fill_window((index_of(scenes).sources[3],), GRID, win, CompositeOptions(resampling="nearest"))
    assert np.array_equal(only_d, reference([d], win)) and (only_d == 255).mean() < 0.1
    alone = fill_window((index_of(scenes).sources[0],), GRID, Window(300, 300, 550, 800),
                        CompositeOptions(resampling="nearest"))
    west, east = alone[:, 60:200, 20:200], alone[:, 60:200, 300:480]
    assert not west.any() and east.all()


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_each_chunk_equals_reprojected_files(scenes, resampling):
    idx = index_of(scenes, resampling=resampling)
    for cid in GRID.chunks_in(GRID.full_window):
        win = GRID.chunk_window(cid)
        assert np.array_equal(read_window(idx, GRID, win), reference(scenes, win, resampling)), cid.key


@pytest.mark.parametrize(("resampling", "max_diff", "equal"), [("nearest", 255, 0.98), ("bilinear", 2, 0.85),
                                                                ("cubic", 3, 0.85)])
def test_chunking_leaves_no_seams(scenes, resampling, max_diff, equal):
    """Each source chunk by chunk or over the whole grid at once: the same kernel, no seams.

    What differs is GDAL's 0.125 px approximation of the transformation, which
    depends on the window warped: a nearest pick near a source pixel edge, an
    interpolated value by a level or two, a pixel at a footprint's very edge.
    """
    idx = index_of(scenes, resampling=resampling)
    for source in idx.sources:
        whole = fill_window((source,), GRID, GRID.full_window, idx.options)
        chunked = np.zeros_like(whole)
        for cid in GRID.chunks_in(GRID.full_window):
            w = GRID.chunk_window(cid)
            chunked[:, w.row0:w.row1, w.col0:w.col1] = fill_window((source,), GRID, w, idx.options)
        both = whole.any(axis=0) & chunked.any(axis=0)
        assert (whole.any(axis=0) != chunked.any(axis=0)).mean() < 1e-3
        diff = np.abs(whole.astype(int) - chunked).max(axis=0)[both]
        assert diff.max() <= max_diff and (diff == 0).mean() > equal, source.path


def test_bounded_tile_reads_give_the_same_pixels(tmp_path):
    """A small read budget warps 3 x 3 tiles in pieces of at most 2 x 2: the same pixels but near ties.

    GDAL approximates the transformation to 0.125 px per warped piece, so a nearest
    pick within that of a source pixel edge may differ where the pieces differ
    (0.4 % of pixels here; the same budget as gdalwarp's default -et 0.125).
    """
    tiles = write_tiles(tmp_path / "tiles", Window(100, 100, 600, 600), 11)
    source = build_index([str(tiles.path)], GRID, CompositeOptions(), zoom=17).index.sources[0]
    assert source.tiles[2] - source.tiles[0] >= 2
    win = Window(0, 0, 768, 768)
    got = fill_window((source,), GRID, win, CompositeOptions(resampling="nearest", max_source_px=4 * 256**2))
    differ = (got != reference([tiles], win)).any(axis=0)
    assert got.any() and differ.mean() < 1e-2
    assert np.array_equal(got.any(axis=0), reference([tiles], win).any(axis=0))


def test_float_vrt_and_jpeg_sources(scenes, tmp_path):
    """Float imagery (NaN → nodata, rounded, clipped), a VRT of a file, lossy JPEG tiles."""
    win = Window(0, 0, 256, 256)
    path = tmp_path / "float.tif"
    data = np.full((3, 64, 64), 100.4, np.float32)
    data[:, :16] = np.nan
    data[0, 32:] = 300.0
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="float32",
                       crs=GRID.crs, transform=GRID.window_transform(Window(0, 0, 64, 64))) as ds:
        ds.write(data)
    got = read_window(build_index([str(path)], GRID, CompositeOptions(resampling="nearest")).index, GRID, win)
    assert not got[:, :16, :64].any() and (got[:, 16:32, :64] == 100).all()
    assert (got[0, 32:64, :64] == 255).all() and not got[:, 64:].any()
    # A VRT is one more GDAL source: the same pixels as the file it wraps.
    a = scenes[2].path
    vrt = tmp_path / "a.vrt"
    rasterio.shutil.copy(a, vrt, driver="VRT")
    opts = CompositeOptions(resampling="bilinear")
    chunk = GRID.chunk_window(next(iter(GRID.chunks_in(GRID.full_window))))
    assert np.array_equal(read_window(build_index([str(vrt)], GRID, opts).index, GRID, chunk),
                          read_window(build_index([str(a)], GRID, opts).index, GRID, chunk))
    # JPEG tiles: lossy, so compared with the decoded tiles warped by rasterio.
    png = scenes[-1]
    decoded = np.zeros_like(png.data)
    tiles = sorted(png.path.glob("17/*/*.png"), key=lambda t: (int(t.parent.name), int(t.stem)))
    x0, y0 = int(tiles[0].parent.name), min(int(t.stem) for t in tiles)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for tile in tiles:
            with rasterio.open(tile) as src:
                rgb = src.read([1, 2, 3])
            out = tmp_path / "jpg" / "17" / tile.parent.name / (tile.stem + ".jpg")
            out.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(out, "w", driver="JPEG", width=256, height=256, count=3, dtype="uint8") as dst:
                dst.write(rgb)
            with rasterio.open(out) as src:
                r, c = (int(tile.stem) - y0) * 256, (int(tile.parent.name) - x0) * 256
                decoded[:, r:r + 256, c:c + 256] = src.read()
    index = build_index([str(tmp_path / "jpg")], GRID, CompositeOptions(resampling="nearest"), zoom=17).index
    jpeg = read_window(index, GRID, GRID.full_window)
    as_decoded = Scene(png.path, decoded, np.ones_like(png.valid), png.transform, png.crs)
    assert np.array_equal(jpeg, reference([as_decoded], GRID.full_window))
