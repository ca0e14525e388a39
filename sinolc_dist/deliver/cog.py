"""Provincial mosaics: a window of the output Zarr written as one Cloud-Optimised GeoTIFF.

SinoLC-1 was released as one colour-mapped uint8 GeoTIFF per province; this
module makes the same kind of file from the output store, aligned to the grid
with no seam, gap or duplicated strip.  :func:`write_cog` streams the window in
pieces of whole output tiles (memory stays at one piece, never the window),
blanks the pixels whose centre lies outside the province, adds each piece into
the class areas (:mod:`sinolc_dist.deliver.stats`) and into the overview levels (2 x 2
class mode, :mod:`sinolc_dist.deliver.pyramid`), writes a tiled ZSTD staging GeoTIFF,
turns it into a COG with GDAL's COG driver, validates it with ``rio_cogeo`` and
only then renames it to its final name, so a reader never sees a half-written
file there (GDAL's and libtiff's messages are caught meanwhile, and any one of
them fails the write: :mod:`sinolc_dist.gdal_errors`).  Asked for another CRS
(``EPSG:4326``), the COG driver reprojects the stage with nearest neighbour
onto a lattice shared by every province and builds ``MODE`` overviews itself.

Why not ``rio_cogeo.cog_translate``: it copies the image once more through
Python and was about twice as slow; GDAL's own ``MODE`` overviews took half of
the COG driver's time.  ``benchmarks/bench_mosaic.py`` compares the whole of
:func:`write_cog` with ``gdal_translate -of COG`` on the same pixels.

The legend travels inside the file: the colour table (TIFF ``ColorMap``,
photometric palette, nodata 0 transparent), the band description, and the class
names as band metadata ``CLASS_<code>`` plus a dataset tag ``CLASS_NAMES``
(JSON), both held in the TIFF's ``GDAL_METADATA`` tag.  GDAL's own "category
names" would live in a ``.aux.xml`` side file for GeoTIFF, and rasterio cannot
set them, so they are not written.  The class areas go into the tag
``SINOLC_CLASS_KM2`` (JSON, code → km²), so a kept file still feeds the statistics.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import shapely
import zarr
from pyproj import CRS
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry.base import BaseGeometry

from sinolc_dist.deliver.pyramid import Pyramid, layout
from sinolc_dist.deliver.stats import CODES, PixelAreas, as_table, class_km2
from sinolc_dist.errors import ConfigError
from sinolc_dist.files import replacing, writable_folder
from sinolc_dist.gdal_errors import caught_gdal_errors, write_failure
from sinolc_dist.grid import (
    DEGREE_METRE,
    ChunkId,
    Grid,
    Window,
    geographic_grid,
    metres_per_unit,
    resolve_crs,
)
from sinolc_dist.legend import NODATA, SINOLC, Legend, band_description
from sinolc_dist.rundir.stores import read_window

#: Dataset tag holding the class areas (JSON, code → km²).
AREAS_TAG = "SINOLC_CLASS_KM2"
#: Dataset tag naming the CRS the file was written in (``grid`` or the one asked for).
CRS_TAG = "SINOLC_MOSAIC_CRS"


@dataclass(frozen=True)
class CogReport:
    """What :func:`write_cog` wrote.

    Attributes:
        path: The final COG.
        width: Columns written (the window clipped to the grid; the warped size when reprojected).
        height: Rows written.
        bytes: File size on disk.
        valid: ``cog_validate``'s verdict (a file that fails is never renamed into place).
        overviews: Overview decimation factors in the file, e.g. ``[2, 4, 8]``.
        seconds: Wall time of the whole call.
        class_km2: Area of each class code inside the mask, km² (equal-area on any grid CRS).

    """

    path: Path
    width: int
    height: int
    bytes: int
    valid: bool
    overviews: list[int]
    seconds: float
    class_km2: dict[int, float] = field(default_factory=dict)


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


def target_crs(grid: Grid, crs: str | None) -> CRS | None:
    """The CRS mosaics are written in: ``None`` for the grid's own (``grid``, empty, or equal).

    ``crs`` is anything PROJ reads, or an alias as in workflows (:func:`sinolc_dist.grid.resolve_crs`).
    """
    if crs in (None, "", "grid"):
        return None
    crs = resolve_crs(crs)
    try:
        dst = CRS.from_user_input(crs)
    except Exception as exc:
        raise ConfigError(f"mosaic CRS {crs!r} is not understood by PROJ ({exc}): give e.g. "
                          "EPSG:4326, or 'grid' for the grid's own CRS") from None
    return None if dst.equals(grid.pyproj_crs, ignore_axis_order=True) else dst


def write_cog(
    dst: Path,
    grid: Grid,
    classes: zarr.Array,
    window: Window,
    mask_geometry: BaseGeometry | None = None,
    tags: dict[str, str] | None = None,
    scratch_dir: Path | None = None,
    crs: str | None = None,
    legend: Legend = SINOLC,
) -> CogReport:
    """Write a window of the class store as one validated Cloud-Optimised GeoTIFF.

    Memory stays at about one chunk-sized piece whatever the window (GDAL's
    warper and overview builder work in blocks too); the staging file, its
    overview levels and the COG driver's temporary file need disk for the
    compressed window.  GDAL compresses on one core unless ``GDAL_NUM_THREADS`` is set.

    Args:
        dst: Final path; replaced atomically, and only by a valid COG.
        grid: The grid the store was made for; gives the CRS and transform.
        classes: The output store's uint8 array over the whole grid (0 = nodata).
        window: Grid pixel window to write; clipped to the grid.
        mask_geometry: Polygon(s) in the grid CRS; pixels whose centre is outside
            become nodata.  ``None`` keeps the whole window.
        tags: Extra dataset tags (e.g. province, run id, boundary source).
        scratch_dir: Where the staging GeoTIFF and its overview levels go (default:
            next to ``dst``); the COG driver's temporary file always goes next to ``dst``.
        crs: Write the COG in this CRS (e.g. ``EPSG:4326``): nearest neighbour,
            on a lattice shared by every province (see :func:`warp_target`).
            ``None`` or ``grid``: the grid's CRS and pixels, unresampled.
        legend: The class names and colours written into the file.

    Raises:
        ConfigError: The window does not overlap the grid, the geometry is not
            polygonal, or the CRS is unknown.
        InputError: A folder is not writable, or writing failed (disk full, I/O
            error); nothing is left under ``dst`` nor any temporary file.

    """
    start = time.perf_counter()
    dst = Path(dst)
    win = _overlap(grid, window)
    geometry = _polygonal(mask_geometry)
    out_crs = target_crs(grid, crs)
    folder = writable_folder(dst.parent, "destination")
    scratch = writable_folder(Path(scratch_dir), "scratch") if scratch_dir else folder
    stage = scratch / f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.stage.tif"
    all_tags = {"OVERVIEW_RESAMPLING": "MODE", CRS_TAG: "grid" if out_crs is None else str(crs),
                **(tags or {})}
    overviews, width, height, km2 = _write_replacing(dst, stage, grid, classes, win, geometry, all_tags,
                                                     out_crs, legend)
    return CogReport(
        path=dst, width=width, height=height, bytes=dst.stat().st_size, valid=True,
        overviews=overviews, seconds=time.perf_counter() - start, class_km2=as_table(km2),
    )


def _write_replacing(
    dst: Path, stage: Path, grid: Grid, classes: zarr.Array, window: Window,
    geometry: BaseGeometry | None, tags: dict[str, str], out_crs: CRS | None, legend: Legend,
) -> tuple[list[int], int, int, np.ndarray]:
    """Stage the window, make the COG in a partial file, validate it and only then rename it to ``dst``.

    Returns the COG's overview factors, width, height and each code's km².  A
    failed write is one :func:`~sinolc_dist.gdal_errors.write_failure`; neither
    the stage nor a partial file stays.
    """
    options, tile, factors = _cog_options(grid, window, out_crs)
    own = factors if out_crs is None else []  # ours, made while staging (see sinolc_dist.deliver.pyramid)
    caught: list[str] = []
    try:
        with replacing(dst, ".tif") as partial:
            with caught_gdal_errors() as caught:
                pyramid, km2 = _write_stage(stage, grid, classes, window, geometry, tags, tile, own, legend)
                source = pyramid.vrt(stage.with_suffix(".vrt")) if own else stage
                rasterio.shutil.copy(
                    source, partial, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=tile,
                    OVERVIEW_RESAMPLING="MODE", SPARSE_OK=True, BIGTIFF="IF_SAFER", **options,
                )
            if caught:  # GDAL may finish a file whose writes failed: never rename one into place
                raise OSError(caught[0])
            return (*_validated(partial, dst), km2)
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        raise write_failure(dst, exc, caught, classes, window, (dst.parent, stage.parent)) from None
    finally:
        for leftover in stage.parent.glob(f"{glob.escape(stage.with_suffix('').name)}*"):
            leftover.unlink(missing_ok=True)


def _overlap(grid: Grid, window: Window) -> Window:
    """The window clipped to the grid; a window outside it is a :class:`ConfigError`."""
    win = window.intersect(grid.full_window)
    if win.height <= 0 or win.width <= 0:
        raise ConfigError(
            f"mosaic window {tuple(window)} (row0, col0, row1, col1) does not overlap the grid "
            f"of {grid.size[0]}x{grid.size[1]} px: check the chunk ids or region"
        )
    return win


def _cog_options(grid: Grid, window: Window, out_crs: CRS | None) -> tuple[dict[str, object], int, list[int]]:
    """The COG driver's options for a window (its warp when reprojected), tile side and overview factors.

    On the grid's CRS the overviews are ours (staged beside the image); warped,
    GDAL builds them from the warped image.
    """
    options: dict[str, object] = {}
    width, height = window.width, window.height
    if out_crs is not None:
        res, (left, bottom, right, top), width, height = warp_target(grid, window, out_crs)
        options = {"TARGET_SRS": out_crs.to_wkt(), "RES": repr(res), "ADD_ALPHA": False,
                   "EXTENT": ",".join(map(repr, (left, bottom, right, top))),
                   "WARP_RESAMPLING": "NEAREST"}
    tile, factors = layout(width, height)
    if not factors:
        options["OVERVIEWS"] = "NONE"  # GDAL refuses OVERVIEW_COUNT=0
    elif out_crs is None:
        options["OVERVIEWS"] = "FORCE_USE_EXISTING"
    else:
        options["OVERVIEW_COUNT"] = len(factors)
    return options, tile, factors


def _validated(path: Path, dst: Path) -> tuple[list[int], int, int]:
    """Check a written COG with rio-cogeo; returns its overview factors, width and height.

    A file rio-cogeo rejects is a :class:`RuntimeError` (a bug, not the disk): never renamed to ``dst``.
    """
    valid, errors, _ = cog_validate(path, quiet=True)
    if not valid:
        raise RuntimeError(f"rio-cogeo rejects the COG made for {dst}: {'; '.join(errors)}")
    with rasterio.open(path) as src:
        return list(src.overviews(1)), src.width, src.height


def class_areas(
    grid: Grid, classes: zarr.Array, window: Window, mask_geometry: BaseGeometry | None = None
) -> dict[int, float]:
    """Area (km²) of each class in a window, masked exactly as :func:`write_cog` masks it.

    For a mosaic written before its file carried the areas: the same pieces are
    streamed, nothing is written.
    """
    win = window.intersect(grid.full_window)
    geometry, areas, total = _polygonal(mask_geometry), PixelAreas(grid), np.zeros(CODES)
    tile, _ = layout(win.width, win.height)
    for piece in _pieces(win, tile * max(1, grid.chunk // tile)):
        data = _read_masked(classes, grid, piece, geometry)
        if data is not None:
            total += class_km2(areas, piece, data)
    return as_table(total)


def warp_target(grid: Grid, window: Window, crs: CRS) -> tuple[float, tuple[float, ...], int, int]:
    """Resolution, extent ``(left, bottom, right, top)`` and size of a window warped to ``crs``.

    The pixel keeps its ground size (1 m → ``DEGREE_METRE``° ≈ 8.98e-6° on a
    geographic CRS, as SinoLC-1 is distributed) and the extent is snapped outward
    to one lattice per CRS (from 73°E, 54°N, the corner of the national EPSG:4326
    grid, or from 0, 0 for a projected CRS), so warped provinces line up pixel
    for pixel and a VRT can mosaic them.
    """
    metres = grid.nominal_pixel_m
    if crs.is_geographic:
        res, (ax, ay) = metres * DEGREE_METRE, geographic_grid().origin
    else:
        res, ax, ay = metres / metres_per_unit(crs), 0.0, 0.0
    left, bottom, right, top = transform_bounds(grid.pyproj_crs.to_wkt(), crs.to_wkt(),
                                                *grid.window_bounds(window), densify_pts=21)
    c0, c1 = math.floor((left - ax) / res), math.ceil((right - ax) / res)
    r0, r1 = math.floor((ay - top) / res), math.ceil((ay - bottom) / res)
    return res, (ax + c0 * res, ay - r1 * res, ax + c1 * res, ay - r0 * res), c1 - c0, r1 - r0


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
    geometry: BaseGeometry | None, tags: dict[str, str], tile: int, factors: list[int],
    legend: Legend,
) -> tuple[Pyramid, np.ndarray]:
    """Write the tiled, colour-mapped staging GeoTIFF that the COG driver copies, and its overviews.

    Pieces are whole multiples of the tile side (and of the largest overview
    factor) from the window's corner, so each tile is compressed once (ZSTD
    level 1: fast both ways) and each piece makes whole overview pixels;
    all-nodata pieces are not written (SPARSE_OK) and read back as 0.  Returns
    the overview levels written for ``factors``, and the area of each code
    (index 0..255) inside the mask, also written as the tag :data:`AREAS_TAG`.
    """
    names = legend.class_names()
    profile = {
        "driver": "GTiff", "width": window.width, "height": window.height, "count": 1,
        "dtype": "uint8", "crs": grid.pyproj_crs.to_wkt(),
        "transform": grid.window_transform(window), "nodata": NODATA, "photometric": "palette",
        "tiled": True, "blockxsize": tile, "blockysize": tile, "compress": "ZSTD",
        "zstd_level": 1, "BIGTIFF": "IF_SAFER", "SPARSE_OK": True,
    }
    side = math.lcm(tile * max(1, grid.chunk // tile), factors[-1] if factors else 1)
    areas, km2 = PixelAreas(grid), np.zeros(CODES)
    with rasterio.open(path, "w", **profile) as out, Pyramid(path, profile, factors) as pyramid:
        out.write_colormap(1, legend.colormap())
        out.set_band_description(1, band_description(legend))
        out.update_tags(1, **{f"CLASS_{code}": name for code, name in names.items()})
        out.update_tags(**{"CLASS_NAMES": json.dumps({str(code): name for code, name in names.items()}),
                           **tags})
        for piece in _pieces(window, side):
            data = _read_masked(classes, grid, piece, geometry)
            if data is not None:
                row, col = piece.row0 - window.row0, piece.col0 - window.col0
                km2 += class_km2(areas, piece, data, legend.codes)
                out.write(data, 1, window=((row, row + piece.height), (col, col + piece.width)))
                pyramid.add(row, col, data)
        out.update_tags(**{AREAS_TAG: json.dumps({str(c): v for c, v in as_table(km2).items()})})
    return pyramid, km2
