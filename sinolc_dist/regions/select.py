"""Which chunks a run does: a region laid over the grid, each chunk tagged with provinces.

A chunk is selected iff its square (``grid.chunk_bounds``) intersects the region
in the grid's CRS; it is tagged with every province of the region whose polygon
(clipped to the region) it intersects.  The test is exact, with no
simplification, and fast enough for the whole country: a quadtree over blocks of
chunks with prepared shapely 2 predicates, where a block inside a polygon is
taken whole and only blocks on a boundary are split down to single chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import LONLAT, Grid
from sinolc_dist.regions.region import Region, equal_area_km2, province_geometries, to_crs

#: Blocks per side of the quadtree's first level (more: fewer levels, more tests).
_TOP_BLOCKS = 32


@dataclass(frozen=True)
class ChunkSelection:
    """The chunks of a region on a grid.

    Attributes:
        rows, cols: Chunk indices (int32), sorted by ``(row, col)``.
        provinces: Per chunk, the adcodes of the region's provinces it touches
            (empty for chunks of a bbox or file region that touch no province).
        land_km2: Per province, the equal-area km² of (province ∩ region).
        chunk_count_by_province: Per province, how many selected chunks it touches.

    """

    rows: np.ndarray
    cols: np.ndarray
    provinces: list[tuple[str, ...]]
    land_km2: dict[str, float]
    chunk_count_by_province: dict[str, int]

    def __len__(self) -> int:
        return len(self.rows)


def _block_boxes(
    grid: Grid, r: np.ndarray, c: np.ndarray, r_end: np.ndarray, c_end: np.ndarray
) -> np.ndarray:
    """Boxes (grid CRS) of the chunk blocks ``[r, r_end) × [c, c_end)``, clipped to the grid."""
    x0, y0 = grid.origin
    res, ch = grid.resolution, grid.chunk
    height, width = grid.size
    return shapely.box(
        x0 + c * ch * res,
        y0 - np.minimum(r_end * ch, height) * res,
        x0 + np.minimum(c_end * ch, width) * res,
        y0 - r * ch * res,
    )


def chunks_intersecting(grid: Grid, geom: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (int64, unsorted) of the grid's chunks that intersect ``geom``.

    ``geom`` is in the grid's CRS.  Blocks of chunks are tested coarse to fine:
    a block that contains no boundary of ``geom`` is decided whole.
    """
    empty = np.empty(0, np.int64)
    if geom.is_empty:
        return empty, empty
    bounds = np.asarray(geom.bounds)
    if not np.isfinite(bounds).all():
        raise ConfigError(
            "the region cannot be projected to the grid CRS: choose a grid that covers it"
        )
    n_rows, n_cols = grid.chunks_shape
    step = grid.chunk * grid.resolution
    x0, y0 = grid.origin
    minx, miny, maxx, maxy = bounds
    c0, c1 = max(math.floor((minx - x0) / step), 0), min(math.floor((maxx - x0) / step) + 1, n_cols)
    r0, r1 = max(math.floor((y0 - maxy) / step), 0), min(math.floor((y0 - miny) / step) + 1, n_rows)
    if r0 >= r1 or c0 >= c1:
        return empty, empty
    shapely.prepare(geom)
    side = 1 << max(0, math.ceil(math.log2(max(r1 - r0, c1 - c0) / _TOP_BLOCKS)))
    r, c = np.meshgrid(np.arange(r0, r1, side), np.arange(c0, c1, side), indexing="ij")
    r, c = r.ravel(), c.ravel()
    found_r, found_c = [empty], [empty]
    while len(r):
        r_end, c_end = np.minimum(r + side, r1), np.minimum(c + side, c1)
        boxes = _block_boxes(grid, r, c, r_end, c_end)
        hit = shapely.intersects(geom, boxes)
        if side == 1:
            # A chunk that only shares an edge or corner with the region has none of its area.
            hit[hit] = ~shapely.touches(geom, boxes[hit])
            found_r.append(r[hit])
            found_c.append(c[hit])
            break
        inside = np.zeros_like(hit)
        inside[hit] = shapely.contains_properly(geom, boxes[hit])
        if inside.any():
            # Every chunk of a block inside the polygon: offsets masked at the edges.
            offsets = np.arange(side)
            rr = r[inside, None] + np.repeat(offsets, side)
            cc = c[inside, None] + np.tile(offsets, side)
            keep = (rr < r_end[inside, None]) & (cc < c_end[inside, None])
            found_r.append(rr[keep])
            found_c.append(cc[keep])
        edge = hit & ~inside
        side //= 2
        r = np.concatenate([r[edge], r[edge] + side, r[edge], r[edge] + side])
        c = np.concatenate([c[edge], c[edge], c[edge] + side, c[edge] + side])
        r_end = np.tile(r_end[edge], 4)
        c_end = np.tile(c_end[edge], 4)
        keep = (r < r_end) & (c < c_end)
        r, c = r[keep], c[keep]
    return np.concatenate(found_r), np.concatenate(found_c)


def _outside_message(grid: Grid, region: Region) -> str:
    height, width = grid.size
    x0, y0 = grid.origin
    res = grid.resolution
    west, south, east, north = Transformer.from_crs(grid.crs, LONLAT, always_xy=True)\
        .transform_bounds(x0, y0 - height * res, x0 + width * res, y0, densify_pts=51)
    return (
        f"region {region.spec!r} lies outside the grid (which covers lon {west:.2f}..{east:.2f}, "
        f"lat {south:.2f}..{north:.2f}): choose a region inside it or a grid that covers it"
    )


def select_chunks(grid: Grid, region: Region, boundaries: str | None = None) -> ChunkSelection:
    """Select the chunks of ``grid`` that intersect ``region``, tagged with its provinces.

    ``boundaries`` (default: the file ``region`` was resolved with) gives the
    province polygons; chunks outside the grid are ignored, and a region wholly
    outside it is a :class:`ConfigError`.
    """
    boundaries = boundaries if boundaries is not None else region.boundaries
    adcodes = sorted(p.adcode for p in region.provinces)
    polys = province_geometries(adcodes, boundaries)
    by_province = region.kind in ("country", "provinces")
    # A province region is the union of its polygons, so its chunks are theirs;
    # otherwise each polygon is clipped to the region first.
    parts = polys if by_province else {
        a: shapely.intersection(p, region.geometry) for a, p in polys.items()
    }
    land = {a: equal_area_km2(p) for a, p in parts.items()}
    n_cols = grid.chunks_shape[1]
    keys, owners = [], []
    for i, adcode in enumerate(adcodes):
        r, c = chunks_intersecting(grid, to_crs(parts[adcode], grid.crs))
        keys.append(r * n_cols + c)
        owners.append(np.full(len(r), i, np.int32))
    key = np.concatenate(keys) if keys else np.empty(0, np.int64)
    owner = np.concatenate(owners) if owners else np.empty(0, np.int32)
    if by_province:
        selected = np.unique(key)
    else:
        r, c = chunks_intersecting(grid, to_crs(region.geometry, grid.crs))
        selected = np.unique(r * n_cols + c)
        # Guard against intersection round-off: only tag chunks the region selects.
        inside = np.isin(key, selected)
        key, owner = key[inside], owner[inside]
    if not len(selected):
        raise ConfigError(_outside_message(grid, region))
    order = np.lexsort((owner, key))
    key, owner = key[order], owner[order]
    tags = _tags(selected, key, owner, adcodes)
    counts = np.bincount(owner, minlength=len(adcodes))
    return ChunkSelection(
        rows=(selected // n_cols).astype(np.int32),
        cols=(selected % n_cols).astype(np.int32),
        provinces=tags,
        land_km2=land,
        chunk_count_by_province={a: int(n) for a, n in zip(adcodes, counts, strict=True)},
    )


def _tags(
    selected: np.ndarray, key: np.ndarray, owner: np.ndarray, adcodes: list[str]
) -> list[tuple[str, ...]]:
    """Per selected chunk, the tuple of owners' adcodes (``key``/``owner`` sorted by key).

    Equal tuples are shared, so that half a million chunks cost a list, not tuples.
    """
    singles = [(a,) for a in adcodes]
    tags: list[tuple[str, ...]] = [()] * len(selected)
    starts = np.searchsorted(key, selected, side="left")
    ends = np.searchsorted(key, selected, side="right")
    single = np.flatnonzero(ends - starts == 1)
    for i, o in zip(single.tolist(), owner[starts[single]].tolist(), strict=True):
        tags[i] = singles[o]
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    for i in np.flatnonzero(ends - starts > 1).tolist():
        tag = tuple(adcodes[o] for o in owner[starts[i]:ends[i]].tolist())
        tags[i] = shared.setdefault(tag, tag)
    return tags
