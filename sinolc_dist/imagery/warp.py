"""One grid window of input from the sources: warp each, first valid pixel wins.

For a window of the grid, :func:`fill_window` takes the sources that meet it in
priority order, warps each into the window with ``rasterio.warp.reproject`` (the
GDAL warper, as ``gdalwarp`` uses it) and keeps, for every pixel, the value of
the first source that has a valid pixel there.  What is valid:

- a source pixel is valid unless the file's mask says otherwise: alpha 0, an
  internal (or ``.msk``) mask, the nodata value, as GDAL's warper reads them,
  so resampling never mixes invalid pixels into valid ones; a destination pixel
  is valid where the warped alpha is not 0;
- float imagery: a pixel with a NaN or infinite band is invalid (with bilinear or
  cubic resampling, the pixels whose kernel meets a NaN too);
- a valid pixel whose bands are all 0 is stored as ``(1, 1, 1)``, because 0 in
  every band is the input store's nodata; pixels no source covers stay 0.

A file is warped from the open dataset in its own dtype, GDAL reading only the
blocks the window needs (its warper bounds its own memory, 64 MB by default),
then converted to uint8 (:func:`~sinolc_dist.imagery.pixels.to_uint8`: uint16
floor-divided by 256 unless ``--scale`` says otherwise, floats rounded and
clipped).  So a chunk is exactly what ``rasterio.warp.reproject`` of the same
files into the same window gives.  Another window over the same pixels (a halo
window, a bigger chunk) may differ at a few pixels: GDAL approximates the
transformation to 0.125 px per piece it warps (``gdalwarp -et 0.125``), so a
nearest pick that is a near tie can go either way.  XYZ tiles are pasted into
one array first (:mod:`~sinolc_dist.imagery.xyz`).

:func:`read_window` is the same thing straight from an index, for an engine
that reads imagery without an input store (see the package docstring).
"""

from __future__ import annotations

import warnings

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.warp import reproject

from sinolc_dist.errors import InputError
from sinolc_dist.grid import Grid, Window
from sinolc_dist.imagery.pixels import SourceReadError, gdal_reason, to_uint8
from sinolc_dist.imagery.sources import Bounds, CompositeOptions, ImageryIndex, Source
from sinolc_dist.imagery.xyz import warp_tiles

# rasterio 1.4 warns "Dataset has no geotransform" from reproject() when two threads warp at once,
# although every source and destination here is georeferenced (results are the same as serial).
warnings.filterwarnings("ignore", "Dataset has no geotransform", NotGeoreferencedWarning, "rasterio.warp")


def warp_file(source: Source, grid: Grid, window: Window, options: CompositeOptions,
              opened: dict[str, DatasetReader] | None = None) -> np.ndarray:
    """Warp one file into a grid window: ``(bands + 1, h, w)`` uint8, alpha last (0 = not valid).

    ``opened`` keeps datasets open between calls (path → dataset; the caller
    closes them), so that GDAL's block cache serves the blocks neighbouring
    windows share; without it the file is opened and closed here.
    """
    n = options.bands
    out = np.zeros((n + 1, window.height, window.width), np.dtype(source.dtype))
    try:
        ds = opened.get(source.path) if opened is not None else None
        if ds is None:
            ds = rasterio.open(source.path)
            if opened is not None:
                opened[source.path] = ds
        try:
            reproject(rasterio.band(ds, list(source.band_indexes)), out,
                      dst_transform=grid.window_transform(window), dst_crs=CRS.from_user_input(grid.crs),
                      resampling=Resampling[options.resampling], src_alpha=source.alpha_band, dst_alpha=n + 1,
                      **source.warp_options)
        finally:
            if opened is None:
                ds.close()
    except (RasterioError, OSError) as exc:
        raise SourceReadError(source.path, gdal_reason(exc)) from None
    return to_uint8(out[:n], out[n] > 0, options.divisor(source.dtype))


def warp_source(source: Source, grid: Grid, window: Window, options: CompositeOptions,
                opened: dict[str, DatasetReader] | None = None) -> np.ndarray:
    """Warp one source (file or tile set) into a grid window (see :func:`warp_file`)."""
    if source.kind == "xyz":
        return warp_tiles(source, grid, window, options)
    return warp_file(source, grid, window, options, opened)


def _meets(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def fill_window(sources: tuple[Source, ...], grid: Grid, window: Window, options: CompositeOptions,
                opened: dict[str, DatasetReader] | None = None) -> np.ndarray:
    """The input pixels of a grid window, ``(bands, h, w)`` uint8, 0 = nodata.

    ``sources`` are in priority order; the first with a valid pixel wins it.
    Stops reading sources once every pixel is filled.  A source that cannot be
    read raises :class:`~sinolc_dist.imagery.pixels.SourceReadError` naming it.
    ``opened``: see :func:`warp_file`.
    """
    n = options.bands
    out = np.zeros((n, window.height, window.width), np.uint8)
    filled = np.zeros((window.height, window.width), bool)
    bounds = grid.window_bounds(window)
    for source in sources:
        if not _meets(source.bounds, bounds):
            continue
        warped = warp_source(source, grid, window, options, opened)
        take = warped[n] > 0
        take &= ~filled
        np.copyto(out, warped[:n], where=take[None])
        filled |= take
        if filled.all():
            break
    zero = filled & ~out.any(axis=0)
    if zero.any():
        out[:, zero] = 1
    return out


def read_window(index: ImageryIndex, grid: Grid, window: Window) -> np.ndarray:
    """Imagery over any grid window straight from the sources, as ingest would store it.

    The reader an engine can call instead of the input store (e.g. for a chunk's
    halo window): no second copy of the imagery, but every read warps again.
    Raises :class:`InputError` when the index was made for another grid.
    """
    if index.grid != grid:
        raise InputError("the imagery index was made for another grid than this run's: index it again")
    return fill_window(index.overlapping(grid.window_bounds(window)), grid, window, index.options)
