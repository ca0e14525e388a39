"""Indexing sources once: footprints, CRS, bands, dates; what changed since last time.

:func:`build_index` expands the source arguments (:func:`~sinolc_dist.imagery.sources.expand`),
opens each file it has not seen (or whose size or modification time changed)
exactly once (:func:`describe_file`, :func:`describe_xyz`) and returns the new
:class:`~sinolc_dist.imagery.sources.ImageryIndex` with the footprints whose
imagery changed, so that the ingest stage redoes only the chunks they touch.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from sinolc_dist.errors import InputError
from sinolc_dist.grid import Grid
from sinolc_dist.imagery.sources import (
    TILE_SUFFIXES,
    WEB_MERCATOR_HALF,
    Bounds,
    CompositeOptions,
    ImageryIndex,
    Source,
    expand,
    image_bands,
    prioritise,
)


class Unreadable(Exception):
    """A file GDAL cannot open (the message says why)."""


def parse_date(text: str | None) -> str | None:
    """An acquisition date in ``YYYY-MM-DDTHH:MM:SS`` form (UTC when zoned), or ``None``.

    Accepts ISO dates/datetimes (``Z`` or offsets), TIFF's ``YYYY:MM:DD HH:MM:SS``
    and ``YYYYMMDD``.
    """
    if not text:
        return None
    s = re.sub(r"^(\d{4}):(\d{2}):(\d{2})", r"\1-\2-\3", text.strip()).replace("Z", "+00:00")
    if re.fullmatch(r"\d{8}", s):
        s = f"{s[:4]}-{s[4:6]}-{s[6:]}"
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when.isoformat(timespec="seconds")


def kernel_scale(crs: Any, transform: Affine, col: float, row: float, grid: Grid) -> tuple[float, float]:
    """GDAL's ``XSCALE``/``YSCALE`` for a source: destination pixels per source pixel, at one point.

    GDAL's warper otherwise derives them from each piece's source and destination
    window sizes, so a resampling kernel (bilinear, cubic) would change from chunk
    to chunk (a clipped source window at a scene's edge changes it most) and
    leave seams; one value per source keeps every chunk on the same kernel.
    """
    pts = np.array([[col, row], [col + 1, row], [col, row + 1]], float)
    xs, ys = transform @ (pts[:, 0], pts[:, 1])
    gx, gy = warp_transform(crs, grid.crs, list(xs), list(ys))
    dst = np.column_stack(~grid.transform @ (np.asarray(gx), np.asarray(gy)))
    jacobian = np.column_stack([dst[1] - dst[0], dst[2] - dst[0]])  # d(dst col,row)/d(src col,row)
    src_per_dst = np.linalg.inv(jacobian)  # column j: source pixels per destination col / row
    x, y = (1.0 / float(np.hypot(*src_per_dst[:, j])) for j in (0, 1))
    return x, y


def too_few_bands(what: str, colorinterp: Sequence[ColorInterp], bands: int) -> InputError:
    """The error for imagery with fewer image bands than the model takes: what it has, what to give."""
    have = len(image_bands(colorinterp))
    return InputError(
        f"{what} has {have} image band(s) ({', '.join(ci.name for ci in colorinterp)}) but the model "
        f"takes {bands}: give imagery with the model's {bands} bands in its order (stack single-band "
        "files with gdalbuildvrt -separate, expand a palette with gdal_translate -expand rgb), or a "
        f"model for {have}-band imagery (a plug-in's bands: --override bands=[...] mean=[...] std=[...])"
    )


def describe_file(path: str, position: int, grid: Grid, bands: int) -> Source:
    """Open a raster once and describe it.

    Raises :class:`Unreadable` when GDAL cannot open it, :class:`InputError` when it
    has no CRS or fewer image bands than the model takes.  The date is the
    ``ACQUISITION_DATE`` tag, else the IMAGERY domain's ``ACQUISITIONDATETIME``,
    else ``TIFFTAG_DATETIME`` (often the file's creation time: set
    ``ACQUISITION_DATE`` or use ``--order given`` when it is not the acquisition).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise Unreadable(str(exc)) from None
    with ds:
        if ds.crs is None:
            raise InputError(f"{path} has no CRS (no georeferencing): assign one, e.g. "
                             "gdal_edit.py -a_srs EPSG:32650, or give tiles as an XYZ directory with --zoom")
        wanted = image_bands(ds.colorinterp)
        if len(wanted) < bands:
            raise too_few_bands(path, ds.colorinterp, bands)
        tags, imagery = ds.tags(), ds.tags(ns="IMAGERY")
        date = (parse_date(tags.get("ACQUISITION_DATE")) or parse_date(imagery.get("ACQUISITIONDATETIME"))
                or parse_date(tags.get("TIFFTAG_DATETIME")))
        try:
            bounds = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
        except Exception as exc:
            raise InputError(f"{path}: its footprint cannot be projected to the grid's CRS ({exc})") from None
        st = os.stat(path)
        alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
        scale = kernel_scale(ds.crs, ds.transform, ds.width / 2, ds.height / 2, grid)
        return Source(path, "gdal", ds.crs.to_string(), tuple(bounds), ds.dtypes[wanted[0] - 1],
                      tuple(wanted[:bands]), date, position, st.st_size, st.st_mtime, (alpha or [0])[0],
                      kernel_scale=scale)


@dataclass
class TileScan:
    """One pass over an XYZ directory: range, formats, count, newest mtime, tiles newer than ``since``."""

    lo: list[int]
    hi: list[int]
    suffixes: set[str] = field(default_factory=set)
    first: str = ""
    count: int = 0
    newest: float = 0.0
    newer: list[tuple[int, int]] = field(default_factory=list)
    newer_columns: list[int] = field(default_factory=list)


def scan_tiles(zdir: Path, zoom: int, since: float = float("inf")) -> TileScan:
    """Stat every tile of a zoom once, listing what changed after ``since``.

    Tiles modified after ``since`` (written again in place) are listed in ``newer``;
    ``x`` directories modified after it (a tile added, removed or renamed over) in
    ``newer_columns``.
    """
    scan = TileScan([2**zoom, 2**zoom], [-1, -1])  # running (x, y) minimum and maximum
    for xdir in os.scandir(zdir):
        if not (xdir.is_dir() and xdir.name.isdigit()):
            continue
        if xdir.stat().st_mtime > since:
            scan.newer_columns.append(int(xdir.name))
        for tile in os.scandir(xdir.path):
            stem, suffix = os.path.splitext(tile.name)
            if stem.isdigit() and suffix.lower() in TILE_SUFFIXES:
                xy = (int(xdir.name), int(stem))
                for i, v in enumerate(xy):
                    scan.lo[i], scan.hi[i] = min(scan.lo[i], v), max(scan.hi[i], v)
                scan.suffixes.add(suffix)
                scan.first = scan.first or tile.path
                scan.count += 1
                mtime = tile.stat().st_mtime
                scan.newest = max(scan.newest, mtime)
                if mtime > since:
                    scan.newer.append(xy)
    return scan


def tiles_bounds(zoom: int, tiles: tuple[int, int, int, int]) -> Bounds:
    """Web Mercator bounds of the inclusive tile range ``(x0, y0, x1, y1)`` at ``zoom``."""
    step = 2 * WEB_MERCATOR_HALF / 2**zoom
    return (-WEB_MERCATOR_HALF + tiles[0] * step, WEB_MERCATOR_HALF - (tiles[3] + 1) * step,
            -WEB_MERCATOR_HALF + (tiles[2] + 1) * step, WEB_MERCATOR_HALF - tiles[1] * step)


def changed_tiles(old: Source, scan: TileScan, grid: Grid) -> list[Bounds]:
    """Footprints (grid CRS) of what a rescan found changed in an indexed tile set."""
    if old.tiles is None or old.zoom is None:
        return [old.bounds]
    y0, y1 = min(old.tiles[1], scan.lo[1]), max(old.tiles[3], scan.hi[1])
    ranges = [(x, y, x, y) for x, y in scan.newer] + [(x, y0, x, y1) for x in scan.newer_columns]
    return [tuple(transform_bounds("EPSG:3857", grid.crs, *tiles_bounds(old.zoom, r), densify_pts=21))
            for r in ranges]


def describe_xyz(root: str, zoom: int, position: int, grid: Grid, bands: int,
                 scan: TileScan | None = None) -> Source:
    """Scan an XYZ tile directory at one zoom (tile range, format, tile size) and describe it.

    ``size``/``mtime`` of the source record the tile count and the newest tile's
    modification time, so that a later scan finds replaced, added or removed tiles.
    """
    zdir = Path(root) / str(zoom)
    scan = scan or scan_tiles(zdir, zoom)
    lo, hi, suffixes, first = scan.lo, scan.hi, scan.suffixes, scan.first
    if not first:
        raise InputError(f"no tiles {zdir}/<x>/<y>{{{','.join(TILE_SUFFIXES)}}} found")
    if len(suffixes) > 1:
        raise InputError(f"tile directory {zdir} mixes formats {sorted(suffixes)}: keep one")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(first) as ds:
                size, dtype, ci = ds.width, ds.dtypes[0], ds.colorinterp
                palette = ds.count == 1 and ci[0] == ColorInterp.palette
    except (RasterioError, OSError) as exc:
        raise InputError(f"tile {first} cannot be read ({exc})") from None
    if (bands > 3) if palette else len(image_bands(ci)) < bands:
        raise too_few_bands(f"tile {first}", ci, bands)
    tiles = (lo[0], lo[1], hi[0], hi[1])
    step = 2 * WEB_MERCATOR_HALF / 2**zoom
    merc = tiles_bounds(zoom, tiles)
    bounds = transform_bounds("EPSG:3857", grid.crs, *merc, densify_pts=21)
    res = step / size
    lattice = Affine(res, 0.0, merc[0], 0.0, -res, merc[3])
    scale = kernel_scale("EPSG:3857", lattice, (tiles[2] - tiles[0] + 1) * size / 2,
                         (tiles[3] - tiles[1] + 1) * size / 2, grid)
    return Source(root, "xyz", "EPSG:3857", tuple(bounds), dtype, tuple(range(1, bands + 1)), None,
                  position, scan.count, scan.newest, zoom=zoom, suffix=sorted(suffixes)[0],
                  tile_size=size, tiles=tiles, kernel_scale=scale)


@dataclass
class IndexUpdate:
    """An index and what changed since the previous one.

    ``changed`` holds the footprints (grid CRS) whose imagery is new, gone,
    modified or reordered: the chunks they touch must be ingested again.
    """

    index: ImageryIndex
    changed: list[Bounds] = field(default_factory=list)
    described: int = 0


def build_index(specs: Sequence[str], grid: Grid, options: CompositeOptions, zoom: int | None = None,
                previous: ImageryIndex | None = None) -> IndexUpdate:
    """Expand the source arguments and index the files not indexed before (or changed).

    Tile sets are rescanned each time and only their changed tiles count as changed.

    Files that cannot be opened are listed in ``unreadable``; if one was indexed
    before, its old entry is kept so that the chunks it covers are tried and fail
    with its path.  Files without a CRS or with too few bands are an
    :class:`InputError` listing them (nothing is written before that check).
    """
    refs = expand(specs, zoom)
    prev = {s.path: s for s in previous.sources} if previous else {}
    sources: list[Source] = []
    unreadable: dict[str, str] = {}
    problems: list[str] = []
    update = IndexUpdate(ImageryIndex(grid, options, ()))
    for position, (kind, path) in enumerate(refs):
        old = prev.get(path)
        try:
            src, base = _reindex(kind, path, position, old, grid, options.bands, zoom, update)
        except (Unreadable, OSError) as exc:
            unreadable[path] = str(exc)
            src, base = old, old
        except InputError as exc:
            problems.append(str(exc))
            continue
        if src is not base:
            update.described += 1
        if src is not base or path in unreadable:  # new, modified or broken: its chunks are redone
            update.changed += [s.bounds for s in (base, src) if s is not None]
        if src is not None:
            sources.append(replace(src, position=position))
    given = {path for _, path in refs}
    update.changed += [s.bounds for path, s in prev.items() if path not in given]
    _check_usable(len(refs), sources, unreadable, problems)
    ordered = prioritise(sources, options.order)
    if previous is not None:
        update.changed += _reranked(previous, ordered)
    update.index = ImageryIndex(grid, options, tuple(ordered), unreadable)
    return update


def _reindex(kind: str, path: str, position: int, old: Source | None, grid: Grid, bands: int,
             zoom: int | None, update: IndexUpdate) -> tuple[Source | None, Source | None]:
    """One source, described again when it is new or changed: ``(source, baseline)``.

    The baseline is what the source is compared with to tell that it changed:
    ``old``, or for a rescanned tile set the new description itself, whose
    changed tiles are then already counted in ``update`` (not the whole set).
    Raises :class:`Unreadable`/``OSError`` for a file GDAL cannot open or stat,
    :class:`InputError` for one unusable as imagery.
    """
    if kind == "xyz" and zoom is not None:
        same = old is not None and old.zoom == zoom
        scan = scan_tiles(Path(path) / str(zoom), zoom, old.mtime if old and same else float("inf"))
        if old is not None and same and (scan.count, scan.newest) == (old.size, old.mtime):
            return old, old
        src = describe_xyz(path, zoom, position, grid, bands, scan)
        if old is not None and same:  # redo the changed tiles, not the set
            update.described += 1
            update.changed += changed_tiles(old, scan, grid)
            return src, src
        return src, old
    st = os.stat(path)
    if old is None or (old.size, old.mtime) != (st.st_size, st.st_mtime):
        return describe_file(path, position, grid, bands), old
    return old, old


def _check_usable(given: int, sources: list[Source], unreadable: dict[str, str], problems: list[str]) -> None:
    """Raise one :class:`InputError` for unusable files (five named), or when none is readable."""
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputError("; ".join(problems[:5]) + more)
    if not any(s.path not in unreadable for s in sources):
        listing = "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:5])
        raise InputError(f"no readable imagery among {given} source(s): {listing}")


def _reranked(previous: ImageryIndex, ordered: list[Source]) -> list[Bounds]:
    """Footprints of the old sources whose rank among the old ones moved: that changes what wins."""
    prev = {s.path: s for s in previous.sources}
    keep = {s.path for s in ordered}
    before = [s.path for s in previous.sources if s.path in keep]
    after = [s.path for s in ordered if s.path in prev]
    return [prev[a].bounds for a, b in zip(after, before, strict=True) if a != b]
