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
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import zarr
from pyproj import CRS
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry.base import BaseGeometry

from sinolc_dist.cog_layout import layout
from sinolc_dist.deliver.pyramid import Pyramid
from sinolc_dist.deliver.staging import (
    AREAS_TAG,
    CRS_TAG,
    AreaSum,
    cog_copy,
    describe,
    pieces,
    polygonal,
    read_masked,
    stage_profile,
    write_areas,
)
from sinolc_dist.deliver.stats import as_table
from sinolc_dist.errors import ConfigError
from sinolc_dist.files import file_sha256, replacing, writable_folder
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
from sinolc_dist.legend import SINOLC, Legend

__all__ = ["AREAS_TAG", "CRS_TAG", "CogReport", "class_areas", "target_crs", "union_window", "write_cog"]


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
        sha256: SHA-256 of the file as written.

    """

    path: Path
    width: int
    height: int
    bytes: int
    valid: bool
    overviews: list[int]
    seconds: float
    class_km2: dict[int, float] = field(default_factory=dict)
    sha256: str = ""


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
    threads: str | int | None = None,
) -> CogReport:
    """Write a window of the class store as one validated Cloud-Optimised GeoTIFF.

    Memory stays at about one chunk-sized piece whatever the window (GDAL's
    warper and overview builder work in blocks too); the staging file, its
    overview levels and the COG driver's temporary file need disk for the
    compressed window.  GDAL compresses on one core unless ``threads`` (or ``GDAL_NUM_THREADS``)
    says otherwise.  :func:`sinolc_dist.deliver.tiled.submit_cog` writes the same file with many tasks.

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
        threads: The COG driver's ``NUM_THREADS`` (e.g. ``ALL_CPUS``); ``None``: GDAL's default.

    Raises:
        ConfigError: The window does not overlap the grid, the geometry is not
            polygonal, or the CRS is unknown.
        InputError: A folder is not writable, or writing failed (disk full, I/O
            error); nothing is left under ``dst`` nor any temporary file.

    """
    start = time.perf_counter()
    dst = Path(dst)
    win = overlap(grid, window)
    geometry = polygonal(mask_geometry)
    out_crs = target_crs(grid, crs)
    folder = writable_folder(dst.parent, "destination")
    scratch = writable_folder(Path(scratch_dir), "scratch") if scratch_dir else folder
    stage = scratch / f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.stage.tif"
    overviews, width, height, km2 = _write_replacing(
        dst, stage, grid, classes, win, geometry, dataset_tags(out_crs, crs, tags), out_crs, legend, threads)
    return CogReport(
        path=dst, width=width, height=height, bytes=dst.stat().st_size, valid=True,
        overviews=overviews, seconds=time.perf_counter() - start, class_km2=as_table(km2),
        sha256=file_sha256(dst),
    )


def dataset_tags(out_crs: CRS | None, crs: str | None, tags: dict[str, str] | None) -> dict[str, str]:
    """The dataset tags of a provincial COG: the overview resampling, the CRS asked for, then ``tags``."""
    return {"OVERVIEW_RESAMPLING": "MODE", CRS_TAG: "grid" if out_crs is None else str(crs), **(tags or {})}


def _write_replacing(
    dst: Path, stage: Path, grid: Grid, classes: zarr.Array, window: Window,
    geometry: BaseGeometry | None, tags: dict[str, str], out_crs: CRS | None, legend: Legend,
    threads: str | int | None,
) -> tuple[list[int], int, int, np.ndarray]:
    """Stage the window, make the COG in a partial file, validate it and only then rename it to ``dst``.

    Returns the COG's overview factors, width, height and each code's km².  A
    failed write is one :func:`~sinolc_dist.gdal_errors.write_failure`; neither
    the stage nor a partial file stays.
    """
    options, tile, factors = cog_options(grid, window, out_crs)
    own = factors if out_crs is None else []  # ours, made while staging (see sinolc_dist.deliver.pyramid)
    side = math.lcm(tile * max(1, grid.chunk // tile), own[-1] if own else 1)
    sums = AreaSum(grid, legend.codes)

    def fill(out: Any, pyramid: Pyramid) -> np.ndarray:
        for piece in pieces(window, side):
            data = read_masked(classes, grid, piece, geometry)
            if data is not None:
                row, col = piece.row0 - window.row0, piece.col0 - window.col0
                sums.add(piece, data)
                out.write(data, 1, window=((row, row + piece.height), (col, col + piece.width)))
                pyramid.add(row, col, data)
        return sums.km2

    caught: list[str] = []
    try:
        with replacing(dst, ".tif") as partial:
            with caught_gdal_errors() as caught:
                km2 = make_cog(partial, stage, grid, window, tags, (tile, own, options), legend, fill,
                               threads)
            if caught:  # GDAL may finish a file whose writes failed: never rename one into place
                raise OSError(caught[0])
            return (*validated(partial, dst), km2)
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        raise write_failure(dst, exc, caught, classes, window, (dst.parent, stage.parent)) from None
    finally:
        for leftover in stage.parent.glob(f"{glob.escape(stage.with_suffix('').name)}*"):
            leftover.unlink(missing_ok=True)


def overlap(grid: Grid, window: Window) -> Window:
    """The window clipped to the grid; a window outside it is a :class:`ConfigError`."""
    win = window.intersect(grid.full_window)
    if win.height <= 0 or win.width <= 0:
        raise ConfigError(
            f"mosaic window {tuple(window)} (row0, col0, row1, col1) does not overlap the grid "
            f"of {grid.size[0]}x{grid.size[1]} px: check the chunk ids or region"
        )
    return win


def cog_options(grid: Grid, window: Window, out_crs: CRS | None) -> tuple[dict[str, object], int, list[int]]:
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


def validated(path: Path, dst: Path) -> tuple[list[int], int, int]:
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
    geometry, sums = polygonal(mask_geometry), AreaSum(grid)
    tile, _ = layout(win.width, win.height)
    for piece in pieces(win, tile * max(1, grid.chunk // tile)):
        data = read_masked(classes, grid, piece, geometry)
        if data is not None:
            sums.add(piece, data)
    return as_table(sums.km2)


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


def make_cog(
    partial: Path, stage: Path, grid: Grid, window: Window, tags: dict[str, str],
    plan: tuple[int, list[int], dict[str, object]], legend: Legend,
    fill: Callable[[Any, Pyramid], np.ndarray] | None, threads: str | int | None = None,
    km2: np.ndarray | None = None,
) -> np.ndarray:
    """Write the staging GeoTIFF and its overview levels, then the COG from them into ``partial``.

    ``plan`` is :func:`cog_options`' ``(tile, own overview factors, driver options)``;
    ``fill(stage, pyramid)`` writes the pixels (whole multiples of the tile side
    and of the largest factor from the window's corner, all-nodata pieces left
    unwritten: SPARSE_OK) and returns each code's km² (index 0..255), written as
    the tag :data:`AREAS_TAG`.  :func:`write_cog` fills it with the window;
    :mod:`sinolc_dist.deliver.tiled` gives no ``fill`` but the areas ``km2``, for
    a COG of empty tiles whose header is the one GDAL writes for the full file
    (from a hollow VRT: :meth:`Pyramid.vrt`).  The stage's files are left for
    the caller to remove (they all start with the stage's name without ``.tif``).
    """
    tile, factors, options = plan
    profile = stage_profile(grid, window, tile)
    with rasterio.open(stage, "w", **profile) as out, Pyramid(stage, profile, factors) as pyramid:
        describe(out, legend, tags)
        km2 = fill(out, pyramid) if fill is not None else km2
        if km2 is None:
            raise ValueError("make_cog needs the pixels (fill) or the class areas (km2)")
        write_areas(out, km2)
    source = pyramid.vrt(stage.with_suffix(".vrt"), hollow=fill is None) if factors or fill is None else stage
    cog_copy(source, partial, tile, options, threads)
    return km2
