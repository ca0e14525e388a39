"""Provincial mosaics: a window of the output Zarr written as one Cloud-Optimised GeoTIFF.

SinoLC-1 was released as one colour-mapped uint8 GeoTIFF per province; this
module makes the same kind of file from the output store, aligned to the grid
with no seam, gap or duplicated strip.  :func:`write_cog` streams the window in
pieces of whole output tiles (memory stays at one piece, never the window),
blanks the pixels whose centre lies outside the province, writes a tiled
staging GeoTIFF, turns it into a COG with ``rio_cogeo`` (overviews by the
``mode`` of the classes), validates it and only then renames it to its final
name, so a reader never sees a half-written file there.

The legend travels inside the file: the colour table (TIFF ``ColorMap``,
photometric palette, nodata 0 transparent), the band description, and the class
names as band metadata ``CLASS_<code>`` plus a dataset tag ``CLASS_NAMES``
(JSON), both held in the TIFF's ``GDAL_METADATA`` tag.  GDAL's own "category
names" would live in a ``.aux.xml`` side file for GeoTIFF, and rasterio cannot
set them, so they are not written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
import zarr
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles
from shapely.geometry.base import BaseGeometry

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import ChunkId, Grid, Window
from sinolc_dist.legend import NODATA, class_names, colormap
from sinolc_dist.stores import read_window

#: COG tile side; 256 is used only where 512 would trip rio-cogeo's tiling check.
TILE = 512
#: rio-cogeo checks the tiling of an image level only when it is larger than this.
_CHECKED_ABOVE = 512
#: Band description of the class band.
BAND_DESCRIPTION = "land-cover class (SinoLC-1 legend, 0 = no data)"


@dataclass(frozen=True)
class CogReport:
    """What :func:`write_cog` wrote.

    Attributes:
        path: The final COG.
        width: Columns written (the window clipped to the grid).
        height: Rows written.
        bytes: File size on disk.
        valid: ``cog_validate``'s verdict (a file that fails is never renamed into place).
        overviews: Overview decimation factors in the file, e.g. ``[2, 4, 8]``.
        seconds: Wall time of the whole call.

    """

    path: Path
    width: int
    height: int
    bytes: int
    valid: bool
    overviews: list[int]
    seconds: float


def union_window(grid: Grid, chunk_ids: Iterable[ChunkId]) -> Window:
    """Return the pixel window covering a set of chunks (clipped to the grid).

    A province's mosaic is sized from the chunks done for it, so its COG lies
    exactly on the grid's chunk lattice and neighbouring provinces line up.
    """
    windows = [grid.chunk_window(ChunkId(*cid)) for cid in chunk_ids]
    if not windows:
        raise ConfigError("no chunks given for the mosaic window: pass the province's done chunks")
    return Window(
        min(w.row0 for w in windows), min(w.col0 for w in windows),
        max(w.row1 for w in windows), max(w.col1 for w in windows),
    )


def write_cog(
    dst: Path,
    grid: Grid,
    classes: zarr.Array,
    window: Window,
    mask_geometry: BaseGeometry | None = None,
    tags: dict[str, str] | None = None,
    scratch_dir: Path | None = None,
) -> CogReport:
    """Write a window of the class store as one validated Cloud-Optimised GeoTIFF.

    Memory stays at about one chunk-sized piece whatever the window; the staging
    file and rio-cogeo's intermediate need disk for the compressed window.  GDAL
    compresses and builds overviews on one core unless ``GDAL_NUM_THREADS`` is set.

    Args:
        dst: Final path; replaced atomically, and only by a valid COG.
        grid: The grid the store was made for; gives the CRS and transform.
        classes: The output store's uint8 array over the whole grid (0 = nodata).
        window: Grid pixel window to write; clipped to the grid.
        mask_geometry: Polygon(s) in the grid CRS; pixels whose centre is outside
            become nodata.  ``None`` keeps the whole window.
        tags: Extra dataset tags (e.g. province, run id, boundary source).
        scratch_dir: Where the staging GeoTIFF goes (default: next to ``dst``);
            rio-cogeo's own intermediate file always goes next to ``dst``.

    Raises:
        ConfigError: The window does not overlap the grid, or the geometry is not polygonal.
        InputError: A folder is not writable, or writing failed (disk full, I/O
            error); nothing is left under ``dst`` nor any temporary file.

    """
    start = time.perf_counter()
    dst = Path(dst)
    win = window.intersect(grid.full_window)
    if win.height <= 0 or win.width <= 0:
        raise ConfigError(
            f"mosaic window {tuple(window)} (row0, col0, row1, col1) does not overlap the grid "
            f"of {grid.size[0]}x{grid.size[1]} px: check the chunk ids or region"
        )
    geometry = _polygonal(mask_geometry)
    folder = _writable_folder(dst.parent, "destination")
    scratch = _writable_folder(Path(scratch_dir), "scratch") if scratch_dir else folder
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage = scratch / f".{dst.name}.{token}.stage.tif"
    partial = folder / f".{dst.name}.{token}.partial.tif"
    tile, factors = _layout(win.width, win.height)
    gdal_log = logging.getLogger("rasterio._env")
    try:
        _write_stage(stage, grid, classes, win, geometry, tags or {}, tile)
        profile = cog_profiles.get("deflate")
        profile.update(blockxsize=tile, blockysize=tile, BIGTIFF="IF_SAFER")
        gdal_log.addFilter(_palette_overview_notice)
        try:
            cog_translate(
                stage, partial, profile, nodata=NODATA, overview_level=len(factors),
                overview_resampling="mode", in_memory=False,
                allow_intermediate_compression=True, forward_band_tags=True, quiet=True,
            )
        finally:
            gdal_log.removeFilter(_palette_overview_notice)
        valid, errors, _ = cog_validate(partial, quiet=True)
        if not valid:
            raise RuntimeError(f"rio-cogeo rejects the COG made for {dst}: {'; '.join(errors)}")
        with rasterio.open(partial) as src:
            overviews = list(src.overviews(1))
        os.replace(partial, dst)
    except (OSError, RasterioError) as exc:
        detail = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
        free = ", ".join(f"{f} has {shutil.disk_usage(f).free >> 20} MiB free"
                         for f in dict.fromkeys((folder, scratch)))
        raise InputError(
            f"writing {dst} failed ({detail}; {free}); nothing was left under that name: "
            "free space or fix access there, then rerun the mosaic"
        ) from None
    finally:
        stage.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return CogReport(
        path=dst, width=win.width, height=win.height, bytes=dst.stat().st_size,
        valid=valid, overviews=overviews, seconds=time.perf_counter() - start,
    )


def _palette_overview_notice(record: logging.LogRecord) -> bool:
    """Drop GDAL's notice that palette overviews are computed without the palette.

    rio-cogeo builds the overviews while its intermediate file is still open for
    writing, where GDAL does not see the colour table; the mode is then taken
    over the class codes themselves, which is exactly what a class map needs.
    """
    return "without a palette" not in record.getMessage()


def _polygonal(geometry: BaseGeometry | None) -> BaseGeometry | None:
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


def _writable_folder(folder: Path, what: str) -> Path:
    """Create ``folder`` if needed and check that files can be made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the {what} folder {folder} ({exc.strerror}): "
            "choose another path or fix its parent's permissions"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"the {what} folder {folder} is not writable: make it writable "
            "(chmod u+wx) or choose another folder"
        )
    return folder


def _flagged(width: int, height: int, tile: int) -> bool:
    """Whether rio-cogeo would call an image level of this size "not tiled".

    It takes a level whose tile is as wide as the level itself for a strip
    layout, so e.g. a 512 x 800 overview with 512 px tiles fails validation.
    """
    return width == tile and max(width, height) > _CHECKED_ABOVE


def _layout(width: int, height: int) -> tuple[int, list[int]]:
    """Tile side and overview factors for an image that rio-cogeo will accept.

    Levels follow rio-cogeo's own rule (halve until the smaller side is one
    tile); GDAL rounds overview sizes up.  A 512 px tile is kept unless it makes
    some level "not tiled" (see :func:`_flagged`); then 256 px is tried, and if
    both would have to stop early the one with more overviews wins.
    """
    options = []
    for tile in (TILE, TILE // 2):
        if _flagged(width, height, tile):
            continue
        factors: list[int] = []
        complete = True
        factor = 1
        while min(width // factor, height // factor) > tile:
            factor *= 2
            if _flagged(-(-width // factor), -(-height // factor), tile):
                complete = False
                break
            factors.append(factor)
        options.append((complete, 0 if complete else len(factors), tile, factors))
    _, _, tile, factors = max(options, key=lambda o: o[:3])
    return tile, factors


def _pieces(window: Window, side: int) -> Iterator[Window]:
    """Row-major pieces of ``side`` px laid from the window's corner (whole output tiles)."""
    for row in range(window.row0, window.row1, side):
        for col in range(window.col0, window.col1, side):
            yield Window(row, col, min(row + side, window.row1), min(col + side, window.col1))


def _read_masked(
    classes: zarr.Array, grid: Grid, piece: Window, geometry: BaseGeometry | None
) -> np.ndarray | None:
    """Read a piece's classes, setting pixels centred outside ``geometry`` to nodata.

    ``None`` stands for a piece that is all nodata (left unwritten: sparse tile).
    """
    box = shapely.box(*grid.window_bounds(piece))
    if geometry is not None and not geometry.intersects(box):
        return None
    data = np.require(read_window(classes, piece), dtype=np.uint8, requirements="W")
    if geometry is not None and not geometry.contains(box):
        # Clip to the piece (one pixel wider) so that rasterising stays cheap for a
        # province outline of many vertices; the pixels inside are unchanged.
        pad = grid.resolution
        left, bottom, right, top = box.bounds
        near = shapely.clip_by_rect(geometry, left - pad, bottom - pad, right + pad, top + pad)
        outside = geometry_mask(
            [near], out_shape=data.shape, transform=grid.window_transform(piece),
            all_touched=False,
        )
        data[outside] = NODATA
    return data if data.any() else None


def _write_stage(
    path: Path, grid: Grid, classes: zarr.Array, window: Window,
    geometry: BaseGeometry | None, tags: dict[str, str], tile: int,
) -> None:
    """Write the tiled, colour-mapped staging GeoTIFF that rio-cogeo turns into the COG.

    Pieces are whole multiples of the tile side from the window's corner, so each
    tile is compressed once; all-nodata pieces are not written (SPARSE_OK) and
    read back as 0.
    """
    names = class_names()
    profile = {
        "driver": "GTiff", "width": window.width, "height": window.height, "count": 1,
        "dtype": "uint8", "crs": grid.pyproj_crs.to_wkt(),
        "transform": grid.window_transform(window), "nodata": NODATA, "photometric": "palette",
        "tiled": True, "blockxsize": tile, "blockysize": tile, "compress": "DEFLATE",
        "zlevel": 1, "BIGTIFF": "IF_SAFER", "SPARSE_OK": True,
    }
    side = tile * max(1, grid.chunk // tile)
    with rasterio.open(path, "w", **profile) as out:
        out.write_colormap(1, colormap())
        out.set_band_description(1, BAND_DESCRIPTION)
        out.update_tags(1, **{f"CLASS_{code}": name for code, name in names.items()})
        legend = json.dumps({str(code): name for code, name in names.items()})
        out.update_tags(**{"CLASS_NAMES": legend, **tags})
        for piece in _pieces(window, side):
            data = _read_masked(classes, grid, piece, geometry)
            if data is not None:
                out.write(data, 1, window=(
                    (piece.row0 - window.row0, piece.row1 - window.row0),
                    (piece.col0 - window.col0, piece.col1 - window.col0),
                ))
