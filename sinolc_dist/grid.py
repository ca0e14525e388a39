"""The national grid: the one geometry object every stage asks.

A :class:`Grid` fixes the CRS, the pixel size, the top-left origin and extent,
the chunk side (the unit of inference and of the state records), the storage
block (the Zarr inner chunk), the shard side (how many chunks one Zarr shard,
and so one task, holds) and the halo that a chunk is read with.  Chunk ids,
windows, bounds and transforms all come from here; nobody recomputes an origin.

Index order is ``(row, col)`` everywhere, and a chunk's id is the string
``"c/<row>/<col>"`` in the stores' attributes, the state, the task keys and the
logs.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from affine import Affine
from pyproj import CRS

from sinolc_dist.errors import ConfigError

#: China Albers equal-area on GRS80 (the ellipsoid of CGCS2000).
CHINA_ALBERS = (
    "+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 +ellps=GRS80 "
    "+towgs84=0,0,0,0,0,0,0 +units=m +no_defs"
)
#: One metre at the equator in degrees, the pixel of SinoLC-1's EPSG:4326 files.
DEGREE_METRE = 1.0 / 111319.490793
#: Lon/lat in degrees: region geometries, STAC footprints and SinoLC-1's files.
LONLAT = "EPSG:4326"
#: Short names a workflow's ``grid.crs`` or a mosaic CRS may give instead of a CRS PROJ reads.
CRS_ALIASES = {"china-albers": CHINA_ALBERS}


def resolve_crs(text: str) -> str:
    """The CRS text PROJ is given: an alias (:data:`CRS_ALIASES`) replaced by its definition.

    Every place that reads a CRS from a user goes through here, so an alias
    means the same thing in a workflow and on the command line.
    """
    return CRS_ALIASES.get(text, text)


def is_geographic(crs: str) -> bool:
    """Whether ``crs`` (an alias or anything PROJ reads) is in degrees of lon/lat.

    ``False`` for a CRS PROJ does not know: :class:`Grid` reports that one
    with PROJ's reason, so callers deciding defaults need not.
    """
    try:
        return CRS.from_user_input(resolve_crs(crs)).is_geographic
    except Exception:  # Grid() words the error
        return False


@functools.lru_cache(maxsize=16)
def is_lonlat(crs: str) -> bool:
    """Whether ``crs`` is :data:`LONLAT` whatever its axis order (no reprojection needed)."""
    return CRS.from_user_input(crs).equals(CRS.from_user_input(LONLAT), ignore_axis_order=True)


def base_crs(crs: CRS) -> CRS:
    """The CRS without a ``+towgs84`` binding (a BoundCRS names the transformation, not the map)."""
    return crs.source_crs if crs.is_bound and crs.source_crs is not None else crs


def metres_per_unit(crs: CRS) -> float:
    """Metres per unit of a projected CRS's first axis (1 for metres, 0.3048 for feet)."""
    return base_crs(crs).axis_info[0].unit_conversion_factor


class ChunkId(NamedTuple):
    """A chunk's place in the grid, ``(row, col)``, with its one string form."""

    row: int
    col: int

    @property
    def key(self) -> str:
        """The id as used in the state, task keys, logs and store attributes."""
        return f"c/{self.row}/{self.col}"

    @classmethod
    def parse(cls, text: str) -> ChunkId:
        """Read ``"c/row/col"`` (or ``"row/col"``) back into a :class:`ChunkId`."""
        parts = text.strip().split("/")
        if parts and parts[0] == "c":
            parts = parts[1:]
        try:
            row, col = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(
                f"bad chunk id {text!r}: expected 'c/<row>/<col>', e.g. 'c/12/40'"
            ) from None
        return cls(row, col)

    def __str__(self) -> str:
        return self.key

    @staticmethod
    def span(chunks: tuple[ChunkId, ...]) -> str:
        """Name a (row, col)-sorted run of chunks by its first and last id: ``c/0/0..c/1/1``."""
        first, last = chunks[0], chunks[-1]
        return first.key if first == last else f"{first.key}..{last.key}"


class ShardId(NamedTuple):
    """A Zarr shard's place, ``(row, col)`` in shard units: ``grid.shard`` chunks per side.

    Distinct from :class:`ChunkId` so that a shard index is never taken for a
    chunk's (both are two ints): the grid converts between them.
    """

    row: int
    col: int

    @property
    def key(self) -> str:
        """The shard's Zarr key under an array (``c/row/col``, the shard's file)."""
        return f"c/{self.row}/{self.col}"

    def __str__(self) -> str:
        return f"shard {self.row}/{self.col}"


class Window(NamedTuple):
    """A pixel window of the grid: rows ``[row0, row1)``, columns ``[col0, col1)``."""

    row0: int
    col0: int
    row1: int
    col1: int

    @property
    def height(self) -> int:
        """Number of rows."""
        return self.row1 - self.row0

    @property
    def width(self) -> int:
        """Number of columns."""
        return self.col1 - self.col0

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for indexing arrays laid out on the grid."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    def within(self, outer: Window) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of this window in an array laid on ``outer`` (which holds it)."""
        return (slice(self.row0 - outer.row0, self.row1 - outer.row0),
                slice(self.col0 - outer.col0, self.col1 - outer.col0))

    def grow(self, px: int) -> Window:
        """The window grown by ``px`` on every side (not clipped: intersect it with the grid)."""
        return Window(self.row0 - px, self.col0 - px, self.row1 + px, self.col1 + px)

    def intersect(self, other: Window) -> Window:
        """The overlap of two windows (may be empty: height or width <= 0)."""
        return Window(
            max(self.row0, other.row0),
            max(self.col0, other.col0),
            min(self.row1, other.row1),
            min(self.col1, other.col1),
        )


@dataclass(frozen=True)
class Grid:
    """A national raster grid cut into chunks.

    Attributes:
        crs: Any string pyproj understands (EPSG code, PROJ string or WKT).
        resolution: Pixel side in CRS units (square pixels).
        origin: ``(x, y)`` of the grid's top-left corner in CRS units.
        size: ``(height, width)`` of the whole grid in pixels.
        chunk: Chunk side in pixels: the unit of inference and of state records.
        block: Storage block side (the Zarr inner chunk); divides ``chunk``.
        shard: Chunks per shard side; one task writes one whole shard.
        halo: Pixels read around a chunk so that results do not depend on it.

    """

    crs: str = CHINA_ALBERS
    resolution: float = 1.0
    origin: tuple[float, float] = (-2_752_512.0, 6_029_312.0)
    size: tuple[int, int] = (5_701_632, 4_980_736)
    chunk: int = 4096
    block: int = 512
    shard: int = 2
    halo: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise ConfigError(f"grid resolution must be a positive number, got {self.resolution}")
        if min(self.size) <= 0:
            raise ConfigError(f"grid size must be positive (height, width), got {self.size}")
        for name in ("chunk", "block", "shard"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"grid {name} must be a positive integer")
        if self.halo < 0:
            raise ConfigError(f"grid halo must be >= 0, got {self.halo}")
        if self.chunk % self.block:
            raise ConfigError(
                f"chunk size {self.chunk} is not a multiple of the storage block {self.block}: "
                f"choose a chunk of k*{self.block} px or a block that divides {self.chunk}"
            )
        try:
            CRS.from_user_input(self.crs)
        except Exception as exc:
            raise ConfigError(f"grid CRS {self.crs!r} is not understood by PROJ: {exc}") from None

    # ----------------------------------------------------------------- geometry
    @property
    def pyproj_crs(self) -> CRS:
        """The CRS as a :class:`pyproj.CRS`."""
        return CRS.from_user_input(self.crs)

    @property
    def transform(self) -> Affine:
        """Affine transform of pixel ``(col, row)`` to CRS ``(x, y)`` for the whole grid."""
        x0, y0 = self.origin
        return Affine(self.resolution, 0.0, x0, 0.0, -self.resolution, y0)

    @property
    def chunks_shape(self) -> tuple[int, int]:
        """Number of chunk rows and columns covering the grid."""
        return (-(-self.size[0] // self.chunk), -(-self.size[1] // self.chunk))

    @property
    def shard_px(self) -> int:
        """Side of one shard in pixels."""
        return self.chunk * self.shard

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window's top-left pixel."""
        return self.transform @ Affine.translation(window.col0, window.row0)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of a window in CRS units."""
        x0, y0 = self.origin
        r = self.resolution
        return (x0 + window.col0 * r, y0 - window.row1 * r, x0 + window.col1 * r, y0 - window.row0 * r)

    @property
    def full_window(self) -> Window:
        """The window of the whole grid."""
        return Window(0, 0, self.size[0], self.size[1])

    def bounds_window(self, left: float, bottom: float, right: float, top: float) -> Window:
        """The smallest pixel window covering CRS bounds, clipped to the grid."""
        x0, y0 = self.origin
        r = self.resolution
        win = Window(
            math.floor((y0 - top) / r),
            math.floor((left - x0) / r),
            math.ceil((y0 - bottom) / r),
            math.ceil((right - x0) / r),
        )
        return win.intersect(self.full_window)

    # ------------------------------------------------------------------- chunks
    def contains(self, cid: ChunkId) -> bool:
        """Whether a chunk id lies inside the grid."""
        rows, cols = self.chunks_shape
        return 0 <= cid.row < rows and 0 <= cid.col < cols

    def chunk_window(self, cid: ChunkId) -> Window:
        """The pixel window of a chunk (clipped at the grid's right and bottom edge)."""
        if not self.contains(cid):
            raise ConfigError(f"chunk {cid.key} is outside the grid ({self.chunks_shape} chunks)")
        c = self.chunk
        return Window(
            cid.row * c,
            cid.col * c,
            min((cid.row + 1) * c, self.size[0]),
            min((cid.col + 1) * c, self.size[1]),
        )

    def halo_window(self, cid: ChunkId, halo: int | None = None) -> Window:
        """A chunk's window grown by the halo and clipped to the grid (never padded)."""
        return self.chunk_window(cid).grow(self.halo if halo is None else halo).intersect(self.full_window)

    def chunk_bounds(self, cid: ChunkId) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of a chunk in CRS units."""
        return self.window_bounds(self.chunk_window(cid))

    def chunk_at(self, row: int, col: int) -> ChunkId:
        """The chunk holding pixel ``(row, col)``."""
        return ChunkId(row // self.chunk, col // self.chunk)

    def chunks_in(self, window: Window) -> Iterator[ChunkId]:
        """Chunks that intersect a pixel window, in (row, col) order."""
        w = window.intersect(self.full_window)
        if w.height <= 0 or w.width <= 0:
            return
        c = self.chunk
        for row in range(w.row0 // c, (w.row1 - 1) // c + 1):
            for col in range(w.col0 // c, (w.col1 - 1) // c + 1):
                yield ChunkId(row, col)

    @property
    def nominal_pixel_m(self) -> float:
        """A pixel's nominal ground side in metres (degrees taken at the equator).

        The one conversion of the grid's pixel to metres: estimates use it, and
        a COG warped to another CRS keeps a pixel of this ground size.
        """
        crs = self.pyproj_crs
        return self.resolution / DEGREE_METRE if crs.is_geographic else self.resolution * metres_per_unit(crs)

    @property
    def nominal_pixel_m2(self) -> float:
        """A pixel's nominal ground area in m² (:attr:`nominal_pixel_m` squared): for estimates.

        Plans, ETAs and throughput in km²/h use it; on an equal-area projection
        it is exact, and true class areas on any CRS are
        :class:`sinolc_dist.deliver.stats.PixelAreas`'.
        """
        return self.nominal_pixel_m**2

    @property
    def nominal_chunk_km2(self) -> float:
        """A whole chunk's nominal ground area in km² (see :attr:`nominal_pixel_m2`)."""
        return self.chunk**2 * self.nominal_pixel_m2 / 1e6

    # ------------------------------------------------------------------- shards
    def shard_of(self, cid: ChunkId) -> ShardId:
        """The shard (in shard units, row/col) that holds a chunk."""
        return ShardId(cid.row // self.shard, cid.col // self.shard)

    def by_shard(self, chunks: Iterable[ChunkId]) -> dict[ShardId, tuple[ChunkId, ...]]:
        """Chunks grouped by the shard that holds them, shards and chunks in (row, col) order."""
        groups: dict[ShardId, list[ChunkId]] = {}
        for cid in chunks:
            groups.setdefault(self.shard_of(cid), []).append(cid)
        return {sid: tuple(sorted(groups[sid])) for sid in sorted(groups)}

    def shard_window(self, sid: ShardId) -> Window:
        """Pixel window of a shard, clipped to the grid."""
        s = self.shard_px
        return Window(
            sid.row * s, sid.col * s, min((sid.row + 1) * s, self.size[0]),
            min((sid.col + 1) * s, self.size[1]),
        )

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, recorded in every output."""
        d = asdict(self)
        d["origin"] = list(self.origin)
        d["size"] = list(self.size)
        return d

    @property
    def fingerprint(self) -> str:
        """Canonical JSON of the grid, to tell whether two records mean the same grid."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        """Rebuild a grid from :meth:`to_dict` output (unknown keys are an error)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown grid keys {sorted(unknown)}; valid keys are {sorted(known)}"
            )
        return cls(**data)


def geographic_grid(chunk: int = 4096, block: int = 512, shard: int = 2, halo: int = 16) -> Grid:
    """The EPSG:4326 grid at ≈1 m (8.98e-6°) over China, as SinoLC-1 is distributed."""
    left, top, right, bottom = 73.0, 54.0, 136.0, 3.0
    res = DEGREE_METRE
    size = (math.ceil((top - bottom) / res), math.ceil((right - left) / res))
    return Grid(
        crs=LONLAT, resolution=res, origin=(left, top), size=size,
        chunk=chunk, block=block, shard=shard, halo=halo,
    )
