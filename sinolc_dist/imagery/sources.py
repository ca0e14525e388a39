"""Imagery sources: which files there are, where they lie, which one wins.

A source argument is a glob of GeoTIFF/COG files, a text file listing paths
(``.txt``/``.lst``/``.list``, one per line, relative to the list, ``#`` for
comments), a GDAL VRT or any single raster GDAL opens, or a directory of web-map
tiles ``DIR/{z}/{x}/{y}.png|jpg`` (XYZ: Web Mercator EPSG:3857, ``y`` counted
from the north) read at one ``--zoom``.

Every file is opened once, when it first appears (:mod:`~sinolc_dist.imagery.index`),
and described by a :class:`Source`: its footprint as bounds in the grid's CRS (densified, so that a
UTM or lon/lat footprint is covered once projected), CRS, band count, dtype and
acquisition date.  The :class:`ImageryIndex` keeps them in priority order and
is saved in the run directory, so a resumed ingest only stats the files: a file
whose size or modification time changed, a new file and a removed file are
reported as *changed* footprints, and the ingest stage redoes the chunks they
touch.  An XYZ tile set is rescanned (one ``stat`` per tile, no tile opened): a
tile written again, added or removed redoes the chunks under it (or under its
``x`` column when the directory changed).

Priority (:func:`prioritise`): with ``order="newest"`` the newest acquisition
date first, undated files after all dated ones, ties in the order given; with
``order="given"`` the order given (globs expand in sorted path order, list files
in line order, several ``--imagery`` arguments one after the other).  The first
source with a valid pixel wins it.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import shapely
from rasterio.enums import ColorInterp

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.files import atomic_write_text
from sinolc_dist.grid import Grid

RESAMPLING = ("nearest", "bilinear", "cubic", "average")
ORDERS = ("newest", "given")
LIST_SUFFIXES = (".txt", ".lst", ".list")
TILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: Half the side of the Web Mercator square, metres.
WEB_MERCATOR_HALF = 20037508.342789244
Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class CompositeOptions:
    """How sources are composited onto the grid: bands, resampling, priority rule, scaling.

    Compositing is "first valid pixel wins" over the sources in priority order
    (:func:`sinolc_dist.imagery.warp.fill_window`); it is saved in the imagery
    index and ``ingest.json`` under the key ``"options"``.

    ``scale`` divides imagery that is not uint8 before it is clipped to 0..255:
    integers are floor-divided (default 256 for 16-bit data, so 0..65535 maps
    evenly onto 0..255; give 16 for 12-bit data), floats are rounded (default 1:
    float imagery is taken to be on the 0..255 scale already).  uint8 imagery is
    never scaled.  ``max_source_px`` bounds the source pixels read at once; a
    larger need of an XYZ tile set splits the destination window (files are
    read by GDAL's warper, which bounds its own memory).
    """

    bands: int = 3
    resampling: str = "bilinear"
    order: str = "newest"
    scale: float | None = None
    max_source_px: int = 1 << 25

    def __post_init__(self) -> None:
        if self.resampling not in RESAMPLING:
            raise ConfigError(f"resampling must be one of {', '.join(RESAMPLING)}, got {self.resampling!r}")
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.scale is not None and not self.scale > 0:
            raise ConfigError(f"scale must be a positive number, got {self.scale}")
        if self.bands < 1 or self.max_source_px < 1:
            raise ConfigError("bands and max_source_px must be >= 1")

    def divisor(self, dtype: str) -> float:
        """The divisor applied to imagery of ``dtype`` (1 for uint8: never scaled)."""
        if dtype == "uint8":
            return 1.0
        if self.scale is not None:
            return self.scale
        return 256.0 if dtype in ("uint16", "int16") else 1.0


@dataclass(frozen=True)
class Source:
    """One indexed source: a raster file (``kind="gdal"``) or an XYZ tile set (``"xyz"``).

    ``bounds`` is the footprint in the grid's CRS; ``band_indexes`` the 1-based
    image bands read (alpha bands excluded), ``alpha_band`` the alpha band (0: none);
    ``position`` the order given;
    ``size``/``mtime`` tell whether a file changed since it was indexed.  XYZ
    sets carry ``zoom``, the tile ``suffix``, ``tile_size`` and the inclusive tile
    range ``tiles = (x0, y0, x1, y1)``.  ``kernel_scale`` is GDAL's
    ``XSCALE``/``YSCALE`` for this source (destination pixels per source pixel),
    fixed once so that every chunk is resampled with the same kernel.
    """

    path: str
    kind: str
    crs: str
    bounds: Bounds
    dtype: str
    band_indexes: tuple[int, ...]
    date: str | None
    position: int
    size: int = 0
    mtime: float = 0.0
    alpha_band: int = 0
    zoom: int | None = None
    suffix: str = ""
    tile_size: int = 0
    tiles: tuple[int, int, int, int] | None = None
    kernel_scale: tuple[float, float] = (1.0, 1.0)

    @property
    def warp_options(self) -> dict[str, str]:
        """GDAL warp options fixing the resampling kernel's size for every window."""
        return {"XSCALE": repr(self.kernel_scale[0]), "YSCALE": repr(self.kernel_scale[1])}

    def tile_path(self, x: int, y: int) -> str:
        """Path of tile ``(x, y)`` of an XYZ source."""
        return os.path.join(self.path, str(self.zoom), str(x), f"{y}{self.suffix}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        """Rebuild from :func:`dataclasses.asdict` output (lists back to tuples)."""
        data = dict(data)
        data["bounds"] = tuple(data["bounds"])
        data["band_indexes"] = tuple(data["band_indexes"])
        data["kernel_scale"] = tuple(data["kernel_scale"])
        if data.get("tiles") is not None:
            data["tiles"] = tuple(data["tiles"])
        return cls(**data)


@dataclass(frozen=True)
class ImageryIndex:
    """The sources of an ingest in priority order (first wins), with the compositing options."""

    grid: Grid
    options: CompositeOptions
    sources: tuple[Source, ...]
    unreadable: dict[str, str] = field(default_factory=dict)

    @cached_property
    def _tree(self) -> shapely.STRtree:
        return shapely.STRtree([shapely.box(*s.bounds) for s in self.sources])

    def overlapping(self, bounds: Bounds) -> tuple[Source, ...]:
        """Sources whose footprint meets ``bounds`` (grid CRS), in priority order."""
        hits = self._tree.query(shapely.box(*bounds), predicate="intersects")
        return tuple(self.sources[i] for i in sorted(int(h) for h in hits))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as saved in the run directory."""
        return {"grid": self.grid.to_dict(), "options": asdict(self.options),
                "sources": [asdict(s) for s in self.sources], "unreadable": self.unreadable}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageryIndex:
        """Rebuild an index from :meth:`to_dict` output."""
        return cls(Grid.from_dict(data["grid"]), CompositeOptions(**data["options"]),
                   tuple(Source.from_dict(s) for s in data["sources"]), dict(data["unreadable"]))

    def save(self, path: Path) -> None:
        """Write the index atomically (beside the destination, then renamed)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> ImageryIndex:
        """Read an index saved by :meth:`save`."""
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"imagery index {path} is damaged ({exc}); delete it to index again") from None


def prioritise(sources: Sequence[Source], order: str) -> list[Source]:
    """Sort sources by the priority rule (first wins); see the module docstring."""
    given = sorted(sources, key=lambda s: s.position)
    if order == "given":
        return given
    dated = sorted((s for s in given if s.date), key=lambda s: s.date or "", reverse=True)
    return dated + [s for s in given if not s.date]  # sorted() is stable: ties keep the given order


# ----------------------------------------------------------------- expansion
def expand(specs: Sequence[str], zoom: int | None) -> list[tuple[str, str]]:
    """Source arguments → ``(kind, absolute path)`` in the order given, duplicates dropped.

    Raises :class:`InputError` naming the argument that matched nothing.
    """
    out: dict[str, str] = {}
    for spec in specs:
        found = _expand_one(spec, zoom)
        if not found:
            raise InputError(f"no imagery matches {spec!r}: give a glob of GeoTIFFs (quote it: "
                             "'DIR/*.tif'), a list file, a VRT, or a tile directory with --zoom")
        for kind, path in found:
            out.setdefault(path, kind)
    return [(kind, path) for path, kind in out.items()]


def _expand_one(spec: str, zoom: int | None) -> list[tuple[str, str]]:
    p = Path(spec).expanduser()
    if p.is_dir():
        zooms = sorted(int(d.name) for d in p.iterdir() if d.is_dir() and d.name.isdigit())
        if zoom is None:
            raise InputError(f"{p} is a directory: give a glob like '{p}/*.tif', or --zoom Z to read "
                             f"it as XYZ tiles (zoom levels found: {zooms or 'none'})")
        if zoom not in zooms:
            raise InputError(f"tile directory {p} has no zoom level {zoom} (found: {zooms or 'none'})")
        return [("xyz", str(p.resolve()))]
    if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
        found: list[tuple[str, str]] = []
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found += _expand_one(str(p.parent / line), zoom) or [("gdal", str(p.parent / line))]
        return found
    if glob.has_magic(spec):
        return [("gdal", str(Path(m).resolve())) for m in sorted(glob.glob(str(p), recursive=True))
                if Path(m).is_file()]
    return [("gdal", str(p.resolve()))] if p.is_file() else []


def image_bands(colorinterp: Sequence[ColorInterp]) -> list[int]:
    """1-based indexes of the bands that are not alpha."""
    return [i + 1 for i, ci in enumerate(colorinterp) if ci != ColorInterp.alpha]
