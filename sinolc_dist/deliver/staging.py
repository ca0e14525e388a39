"""What both COG writers share: the masked pieces of a window, the staging file's make-up, the COG copy.

:func:`sinolc_dist.deliver.cog.write_cog` (one task) and
:mod:`sinolc_dist.deliver.tiled` (many tasks, then one assembly) must write the
same file, so everything that decides its bytes lives here once: which pixels
are kept (:func:`read_masked`, a pixel centred outside the province is nodata),
the staging GeoTIFF's profile and description (:func:`stage_profile`,
:func:`describe`: colour table, band description, class names, tags), the
class areas (:class:`AreaSum`, the same total whatever the pieces it is added
in on an equal-area grid) and the COG driver's options (:func:`cog_copy`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.shutil
import shapely
import zarr
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry

from sinolc_dist.deliver.stats import CODES, PixelAreas, as_table, class_km2
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import Grid, Window
from sinolc_dist.legend import NODATA, Legend, band_description
from sinolc_dist.rundir.stores import read_window

#: Dataset tag holding the class areas (JSON, code → km²).
AREAS_TAG = "SINOLC_CLASS_KM2"
#: Dataset tag naming the CRS the file was written in (``grid`` or the one asked for).
CRS_TAG = "SINOLC_MOSAIC_CRS"


def polygonal(geometry: BaseGeometry | None) -> BaseGeometry | None:
    """Check that the mask is a (Multi)Polygon; return it valid and prepared."""
    if geometry is None:
        return None
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise ConfigError(
            f"mosaic mask must be a Polygon or MultiPolygon in the grid CRS, got a "
            f"{geometry.geom_type}: pass the province boundary polygon"
        )
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    shapely.prepare(geometry)
    return geometry


def pieces(window: Window, side: int) -> Iterator[Window]:
    """Row-major pieces of ``side`` px laid from the window's corner (whole output tiles)."""
    for row in range(window.row0, window.row1, side):
        for col in range(window.col0, window.col1, side):
            yield Window(row, col, min(row + side, window.row1), min(col + side, window.col1))


def outside(grid: Grid, piece: Window, geometry: BaseGeometry | None) -> bool:
    """Whether no pixel of the piece can lie inside ``geometry`` (its box misses the polygon)."""
    return geometry is not None and not geometry.intersects(shapely.box(*grid.window_bounds(piece)))


def read_masked(
    classes: zarr.Array, grid: Grid, piece: Window, geometry: BaseGeometry | None
) -> np.ndarray | None:
    """Read a piece's classes, setting pixels centred outside ``geometry`` to nodata.

    ``None`` stands for a piece that is all nodata (left unwritten: sparse tile).
    """
    if outside(grid, piece, geometry):
        return None
    box = shapely.box(*grid.window_bounds(piece))
    data = np.require(read_window(classes, piece), dtype=np.uint8, requirements="W")
    if geometry is not None and not geometry.contains(box):
        # Clip to the piece (one pixel wider) so that rasterising stays cheap for a
        # province outline of many vertices; the pixels inside are unchanged.
        pad = grid.resolution
        left, bottom, right, top = box.bounds
        near = shapely.clip_by_rect(geometry, left - pad, bottom - pad, right + pad, top + pad)
        out = geometry_mask(
            [near], out_shape=data.shape, transform=grid.window_transform(piece),
            all_touched=False,
        )
        data[out] = NODATA
    return data if data.any() else None


class AreaSum:
    """The class areas of a window, added piece by piece.

    On an equal-area grid (every pixel the same area) it counts pixels and
    multiplies once at the end, so the total (and the file's :data:`AREAS_TAG`)
    is the same to the last bit however the window was cut into pieces, by one
    task or by many; elsewhere the pieces' km² are added.
    """

    def __init__(self, grid: Grid, codes: tuple[int, ...] = ()) -> None:
        self.areas, self.codes = PixelAreas(grid), codes
        self._counting = self.areas.method == "constant"
        self.raw = np.zeros(CODES)  # pixel counts when counting, else km²

    def add(self, piece: Window, data: np.ndarray) -> None:
        """Add a piece of classes lying on ``piece``."""
        km2 = class_km2(self.areas, piece, data, self.codes)
        self.raw += np.rint(km2 / self.areas.constant_km2) if self._counting else km2

    def merge(self, raw: np.ndarray) -> None:
        """Add another sum's :attr:`raw` (of the same grid) into this one."""
        self.raw += raw

    @property
    def km2(self) -> np.ndarray:
        """Area of each code (index 0..255), km²."""
        return self.raw * self.areas.constant_km2 if self._counting else self.raw.copy()


def stage_profile(grid: Grid, window: Window, tile: int) -> dict[str, Any]:
    """The tiled, colour-mapped staging GeoTIFF's creation profile for a window of the grid."""
    return {
        "driver": "GTiff", "width": window.width, "height": window.height, "count": 1,
        "dtype": "uint8", "crs": grid.pyproj_crs.to_wkt(),
        "transform": grid.window_transform(window), "nodata": NODATA, "photometric": "palette",
        "tiled": True, "blockxsize": tile, "blockysize": tile, "compress": "ZSTD",
        "zstd_level": 1, "BIGTIFF": "IF_SAFER", "SPARSE_OK": True,
    }


def describe(out: Any, legend: Legend, tags: dict[str, str]) -> None:
    """Write the legend (colour table, band description, class names) and ``tags`` into an open stage."""
    names = legend.class_names()
    out.write_colormap(1, legend.colormap())
    out.set_band_description(1, band_description(legend))
    out.update_tags(1, **{f"CLASS_{code}": name for code, name in names.items()})
    out.update_tags(**{"CLASS_NAMES": json.dumps({str(code): name for code, name in names.items()}),
                       **tags})


def write_areas(out: Any, km2: np.ndarray) -> None:
    """Write the class areas into an open stage as the tag :data:`AREAS_TAG` (after :func:`describe`)."""
    out.update_tags(**{AREAS_TAG: json.dumps({str(c): v for c, v in as_table(km2).items()})})


def cog_copy(source: Path, partial: Path, tile: int, options: dict[str, object],
             threads: str | int | None = None) -> None:
    """GDAL's COG driver from a stage (or its VRT) to ``partial``: DEFLATE, ``tile`` px blocks, sparse.

    ``threads``: the driver's ``NUM_THREADS`` (compression threads); ``None``
    leaves GDAL's default (``GDAL_NUM_THREADS``, else one).
    """
    extra = {} if threads is None else {"NUM_THREADS": str(threads)}
    rasterio.shutil.copy(
        source, partial, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=tile,
        OVERVIEW_RESAMPLING="MODE", SPARSE_OK=True, BIGTIFF="IF_SAFER", **options, **extra,
    )


