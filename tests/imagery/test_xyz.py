"""XYZ tiles: where a tile lies in Web Mercator, which tiles a window needs, pasting and warping them."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning

from sinolc_dist.grid import Window
from sinolc_dist.imagery.index import build_index
from sinolc_dist.imagery.pixels import SourceReadError, failing_path
from sinolc_dist.imagery.sources import WEB_MERCATOR_HALF, CompositeOptions
from sinolc_dist.imagery.xyz import paste_tiles, read_tile, tile_transform, tiles_for, warp_tiles
from tests.imagery.imagery_factory import GRID, ZOOM, as_uint8, reference, write_tiles

H = WEB_MERCATOR_HALF
NEAREST = CompositeOptions(resampling="nearest")


@pytest.fixture(scope="module")
def tileset(tmp_path_factory):
    """PNG tiles at zoom 17 under part of the grid, the first RGBA with a transparent corner."""
    scene = write_tiles(tmp_path_factory.mktemp("xyz") / "tiles", Window(300, 300, 700, 700), 21)
    source = build_index([str(scene.path)], GRID, CompositeOptions(), zoom=ZOOM).index.sources[0]
    return scene, source


def test_tile_transform_of_known_tiles():
    assert tile_transform(0, 0, 0) == Affine(2 * H / 256, 0, -H, 0, -2 * H / 256, H)
    # Zoom 1, tile (1, 1): the south-east quarter, its top-left corner at the origin.
    south_east = tile_transform(1, 1, 1, tile_size=512)
    assert south_east @ (0, 0) == pytest.approx((0.0, 0.0))
    assert south_east @ (512, 512) == pytest.approx((H, -H))
    assert tile_transform(ZOOM, 3, 5).a == pytest.approx(2 * H / (256 * 2**ZOOM))  # 1.19 m at zoom 17


def test_tile_transform_places_a_point_in_its_slippy_map_tile():
    lon, lat = 114.3, 30.6  # Wuhan
    n = 2**ZOOM
    x = math.floor((lon + 180) / 360 * n)
    y = math.floor((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)  # the OSM formula
    mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    col, row = ~tile_transform(ZOOM, x, y) @ (mx, my)
    assert 0 <= col < 256 and 0 <= row < 256


def test_tiles_for_covers_the_window_within_the_set(tileset):
    source = tileset[1]
    win = Window(400, 400, 600, 600)
    x0, y0, x1, y1 = tiles_for(source, GRID, win)
    tx0, ty0, tx1, ty1 = source.tiles
    assert tx0 <= x0 <= x1 <= tx1 and ty0 <= y0 <= y1 <= ty1 and (x0, y0, x1, y1) != source.tiles
    left, bottom, right, top = rasterio.warp.transform_bounds(GRID.crs, "EPSG:3857", *GRID.window_bounds(win))
    merc_left, merc_top = tile_transform(ZOOM, x0, y0) @ (0, 0)
    merc_right, merc_bottom = tile_transform(ZOOM, x1, y1) @ (256, 256)
    assert merc_left < left and merc_right > right and merc_bottom < bottom and merc_top > top
    # The whole grid needs the whole set; a window far from it none.
    assert tiles_for(source, GRID, GRID.full_window) == source.tiles
    assert tiles_for(source, GRID, Window(0, 0, 64, 64)) is None


def test_paste_tiles_is_exact_and_a_missing_tile_is_nodata(tileset, tmp_path):
    scene, source = tileset
    pasted = paste_tiles(source, source.tiles, CompositeOptions())
    assert np.array_equal(pasted, as_uint8(scene))
    assert (pasted[3, :100, :120] == 0).all() and pasted[3, 100:, 120:].all()  # the transparent corner
    # The same set with one tile removed: that tile's block is all zeros, the rest unchanged.
    x1, y1 = source.tiles[2:]
    copy = write_tiles(tmp_path / "tiles", Window(300, 300, 700, 700), 21)
    gone = build_index([str(copy.path)], GRID, CompositeOptions(), zoom=ZOOM).index.sources[0]
    (copy.path / str(ZOOM) / str(x1) / f"{y1}.png").unlink()
    holed = paste_tiles(gone, gone.tiles, CompositeOptions())
    assert not holed[:, -256:, -256:].any()
    kept = np.ones(pasted.shape[1:], bool)
    kept[-256:, -256:] = False
    assert np.array_equal(holed[:, kept], pasted[:, kept])


def test_warp_tiles_equals_rasterio_over_the_pasted_tiles(tileset):
    scene, source = tileset
    win = Window(256, 256, 768, 768)
    got = warp_tiles(source, GRID, win, NEAREST)
    ref = reference([scene], win)  # the whole set pasted independently and warped by rasterio
    valid = got[3] > 0
    assert valid.mean() > 0.3 and not valid.all()
    assert np.array_equal(valid, ref.any(axis=0))
    assert np.array_equal(np.where(got[:3] == 0, 1, got[:3])[:, valid], ref[:, valid])
    assert not warp_tiles(source, GRID, Window(0, 0, 64, 64), NEAREST).any()  # no tile there


def test_a_broken_tile_fails_with_its_path(tmp_path):
    tile = tmp_path / "17" / "1" / "2.png"
    tile.parent.mkdir(parents=True)
    tile.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(SourceReadError) as err:
        read_tile(str(tile), 3, 256, 1.0)
    assert failing_path(str(err.value)) == str(tile)
    small = tmp_path / "small.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(small, "w", driver="PNG", width=128, height=128, count=3, dtype="uint8") as ds:
            ds.write(np.ones((3, 128, 128), np.uint8))
    with pytest.raises(SourceReadError, match=r"small\.png :: tile is 128x128 px, the set's are 256x256"):
        read_tile(str(small), 3, 256, 1.0)
    with pytest.raises(SourceReadError, match="tile has 3 image band"):
        read_tile(str(small), 4, 128, 1.0)


def test_palette_tiles_are_expanded_through_their_colour_table(tmp_path):
    tile = tmp_path / "palette.png"
    index = np.zeros((256, 256), np.uint8)
    index[:, 128:] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tile, "w", driver="PNG", width=256, height=256, count=1, dtype="uint8") as ds:
            ds.write(index, 1)
            ds.write_colormap(1, {0: (10, 20, 30, 0), 1: (200, 100, 50, 255)})
    out = read_tile(str(tile), 3, 256, 1.0)
    assert out[:, 0, 200].tolist() == [200, 100, 50, 255]
    assert out[3, :, :128].max() == 0  # palette entry 0 is transparent
