"""Web-map (XYZ) tiles read as one georeferenced raster in Web Mercator.

Tiles ``DIR/{z}/{x}/{y}.png|jpg`` carry no georeferencing; their place follows
from ``z/x/y``: at zoom ``z`` the Web Mercator square (EPSG:3857, side
2 × 20037508.34 m) is cut into ``2**z`` × ``2**z`` tiles, ``x`` from the west and
``y`` from the north.  All tiles of a zoom lie on one pixel lattice, so the
tiles a grid window needs are pasted into one array (whole tiles: they are
decoded whole anyway) whose transform we assign, and that array is warped like
a file.  Memory is bounded: when the tiles a window needs exceed
``max_source_px`` pixels, the window is warped in halves, down to pieces that
need at most 2 x 2 tiles.  A missing tile is
nodata, as is a tile's alpha 0; a palette PNG is expanded through its colour
table.  JPEG has no alpha: its pixels are all valid (black borders stay, as
``(1, 1, 1)``).
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import reproject, transform_bounds

from sinolc_dist.grid import Grid, Window
from sinolc_dist.imagery.pixels import SourceReadError, gdal_reason, to_uint8
from sinolc_dist.imagery.sources import WEB_MERCATOR_HALF, CompositeOptions, Source, image_bands

WEB_MERCATOR = CRS.from_epsg(3857)


def tile_transform(zoom: int, x: int, y: int, tile_size: int = 256) -> Affine:
    """Affine transform (EPSG:3857) of tile ``x, y`` at ``zoom``: where its pixels lie."""
    res = 2 * WEB_MERCATOR_HALF / (tile_size * 2**zoom)
    return Affine(res, 0.0, -WEB_MERCATOR_HALF + x * tile_size * res,
                  0.0, -res, WEB_MERCATOR_HALF - y * tile_size * res)


def read_tile(path: str, bands: int, tile_size: int, divisor: float) -> np.ndarray:
    """One tile as ``(bands + 1, size, size)`` uint8 with alpha last."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                if (ds.width, ds.height) != (tile_size, tile_size):
                    raise SourceReadError(path, f"tile is {ds.width}x{ds.height} px, the set's are "
                                                f"{tile_size}x{tile_size}")
                if ds.count == 1 and ds.colorinterp[0] == ColorInterp.palette:
                    lut = np.zeros((256, 4), np.uint8)
                    for i, rgba in ds.colormap(1).items():
                        lut[i] = rgba
                    rgba = np.moveaxis(lut[ds.read(1)], -1, 0)
                    return to_uint8(rgba[:bands], rgba[3] > 0, 1.0)
                wanted = image_bands(ds.colorinterp)[:bands]
                if len(wanted) < bands:
                    raise SourceReadError(path, f"tile has {len(wanted)} image band(s), not {bands}")
                data = ds.read(indexes=wanted)
                mask = ds.dataset_mask() > 0 if ds.count > len(wanted) else None
                return to_uint8(data, mask, divisor)
    except (RasterioError, OSError) as exc:
        raise SourceReadError(path, gdal_reason(exc)) from None


def _zoom_and_range(source: Source) -> tuple[int, tuple[int, int, int, int]]:
    if source.tiles is None or source.zoom is None:
        raise ValueError(f"{source.path} is not an indexed XYZ source")
    return source.zoom, source.tiles


def tiles_for(source: Source, grid: Grid, window: Window) -> tuple[int, int, int, int] | None:
    """The inclusive tile range ``(x0, y0, x1, y1)`` a grid window needs (kernel margin included)."""
    zoom, (tx0, ty0, tx1, ty1) = _zoom_and_range(source)
    left, bottom, right, top = transform_bounds(CRS.from_user_input(grid.crs), WEB_MERCATOR,
                                                *grid.window_bounds(window), densify_pts=21)
    res = 2 * WEB_MERCATOR_HALF / (source.tile_size * 2**zoom)
    # Four pixels (source or destination, the larger) of margin: cubic's radius is two.
    margin = 4 * max(res, (right - left) / window.width, (top - bottom) / window.height)
    step = source.tile_size * res
    x0 = max(tx0, math.floor((left - margin + WEB_MERCATOR_HALF) / step))
    x1 = min(tx1, math.floor((right + margin + WEB_MERCATOR_HALF) / step))
    y0 = max(ty0, math.floor((WEB_MERCATOR_HALF - top - margin) / step))
    y1 = min(ty1, math.floor((WEB_MERCATOR_HALF - bottom + margin) / step))
    return (x0, y0, x1, y1) if x0 <= x1 and y0 <= y1 else None


def paste_tiles(source: Source, tiles: tuple[int, int, int, int], options: CompositeOptions) -> np.ndarray:
    """The tiles of a range pasted into one ``(bands + 1, h, w)`` uint8 array (alpha last).

    Tiles of one zoom share a pixel lattice, so pasting is exact: no resampling.
    """
    x0, y0, x1, y1 = tiles
    ts, n = source.tile_size, options.bands
    out = np.zeros((n + 1, (y1 - y0 + 1) * ts, (x1 - x0 + 1) * ts), np.uint8)
    divisor = options.divisor(source.dtype)
    for y in range(y0, y1 + 1):
        for x in range(x0, x1 + 1):
            path = source.tile_path(x, y)
            if os.path.exists(path):
                out[:, (y - y0) * ts:(y - y0 + 1) * ts, (x - x0) * ts:(x - x0 + 1) * ts] = \
                    read_tile(path, n, ts, divisor)
    return out


def warp_tiles(source: Source, grid: Grid, window: Window, options: CompositeOptions) -> np.ndarray:
    """Warp an XYZ tile set into a grid window: ``(bands + 1, h, w)`` uint8, alpha last."""
    n = options.bands
    out = np.zeros((n + 1, window.height, window.width), np.uint8)
    tiles = tiles_for(source, grid, window)
    if tiles is None:
        return out
    nx, ny = tiles[2] - tiles[0] + 1, tiles[3] - tiles[1] + 1
    if nx * ny * source.tile_size**2 > options.max_source_px and max(nx, ny) > 2:
        for part in _halves(window):
            out[:, part.row0 - window.row0:part.row1 - window.row0,
                part.col0 - window.col0:part.col1 - window.col0] = warp_tiles(source, grid, part, options)
        return out
    zoom, _ = _zoom_and_range(source)
    reproject(paste_tiles(source, tiles, options), out,
              src_transform=tile_transform(zoom, tiles[0], tiles[1], source.tile_size),
              src_crs=WEB_MERCATOR, dst_transform=grid.window_transform(window),
              dst_crs=CRS.from_user_input(grid.crs), resampling=Resampling[options.resampling],
              src_alpha=n + 1, dst_alpha=n + 1, **source.warp_options)
    return out


def _halves(w: Window) -> tuple[Window, Window]:
    if w.height >= w.width:
        mid = (w.row0 + w.row1) // 2
        return Window(w.row0, w.col0, mid, w.col1), Window(mid, w.col0, w.row1, w.col1)
    mid = (w.col0 + w.col1) // 2
    return Window(w.row0, w.col0, w.row1, mid), Window(w.row0, mid, w.row1, w.col1)
