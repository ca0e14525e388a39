"""Class areas in km², equal-area whatever the grid's CRS, and the run's statistics tables.

A class map is only useful with the area of each class, and a pixel's area
depends on the grid: on an equal-area projection (China Albers, the default) it
is the pixel side squared; on EPSG:4326 a pixel of 8.98e-6° covers about
0.87 m² at 18°N and 0.58 m² at 53°N, so counting pixels would be wrong by
tens of percent.  :class:`PixelAreas` gives the true area of the grid's pixels:

``constant``
    projected equal-area CRSs: side² in m² (with the CRS's unit:
    :attr:`sinolc_dist.grid.Grid.nominal_pixel_m2`, exact on such a grid);
``rows``
    geographic CRSs: the area of a pixel depends on its row only; each row's is
    measured by projecting the pixel's four corners into China Albers (equal
    area, GRS80) and taking the quadrilateral's area;
``pixels``
    other projections (UTM…): every pixel's corners projected the same way
    (a few µs per pixel: prefer an equal-area or geographic grid for a national run).

:func:`class_km2` adds a piece of classes into per-code areas; the mosaic
streams every province through it while it writes the COG (one read of the
output store serves both).  :func:`write_tables` writes a run's
``stats/classes_km2.csv`` and ``.json``: one row per province, one column per
class, and the sum over the provinces (a pixel's centre lies in one province
polygon, so nothing is counted twice, up to overlaps in the boundary data).
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from sinolc_dist.errors import InputError
from sinolc_dist.files import atomic_write_text
from sinolc_dist.grid import CHINA_ALBERS, Grid, Window, base_crs
from sinolc_dist.legend import NODATA, SINOLC, Legend

#: Codes a uint8 class map can hold.
CODES = 256
#: Rows handled at once where every pixel has its own area (bounds the memory).
_STRIP = 256
#: Projection method names whose maps preserve area.
_EQUAL_AREA = ("equal area", "albers", "mollweide", "sinusoidal", "equal earth")


def area_method(crs: CRS) -> str:
    """How pixel areas are found for a CRS: ``constant``, ``rows`` or ``pixels``."""
    base = base_crs(crs)
    if base.is_geographic:
        return "rows"
    op = base.coordinate_operation
    name = op.method_name.lower() if op is not None else ""
    return "constant" if base.is_projected and any(k in name for k in _EQUAL_AREA) else "pixels"


@functools.lru_cache(maxsize=8)
def _to_albers(crs: str) -> Transformer:
    return Transformer.from_crs(crs, CHINA_ALBERS, always_xy=True)


def _quad_km2(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Areas (km²) of the quadrilaterals between corner arrays of shape ``(h + 1, w + 1)``.

    Half the cross product of the diagonals: differences of nearby corners only,
    so metre-sized pixels keep full precision at national coordinates.
    """
    d1x, d1y = xs[1:, 1:] - xs[:-1, :-1], ys[1:, 1:] - ys[:-1, :-1]
    d2x, d2y = xs[1:, :-1] - xs[:-1, 1:], ys[1:, :-1] - ys[:-1, 1:]
    return np.abs(d1x * d2y - d1y * d2x) / 2e6


@dataclass(frozen=True)
class PixelAreas:
    """The true (equal-area) area of the pixels of one grid."""

    grid: Grid

    @functools.cached_property
    def method(self) -> str:
        """``constant``, ``rows`` or ``pixels`` (see the module's docstring)."""
        return area_method(self.grid.pyproj_crs)

    @property
    def constant_km2(self) -> float:
        """Area of every pixel, for an equal-area grid: its nominal area (exact there)."""
        return self.grid.nominal_pixel_m2 / 1e6

    def _corner_km2(self, window: Window, cols: int) -> np.ndarray:
        """Areas of the window's first ``cols`` columns of pixels, from their projected corners."""
        t = self.grid.window_transform(window)
        col = t.c + t.a * np.arange(cols + 1)
        row = t.f + t.e * np.arange(window.height + 1)
        xs, ys = np.meshgrid(col, row)
        ax, ay = _to_albers(self.grid.crs).transform(xs, ys)
        return _quad_km2(np.asarray(ax), np.asarray(ay))

    def rows_km2(self, window: Window) -> np.ndarray:
        """Area of one pixel in each row of the window (``rows`` and ``constant`` grids)."""
        if self.method == "constant":
            return np.full(window.height, self.constant_km2)
        return self._corner_km2(window, 1)[:, 0]

    def pixels_km2(self, window: Window) -> np.ndarray:
        """Area of every pixel of the window, shape ``(rows, cols)``."""
        if self.method == "pixels":
            return self._corner_km2(window, window.width)
        return np.broadcast_to(self.rows_km2(window)[:, None], (window.height, window.width))


def _code_counts(data: np.ndarray, per_row: bool, codes: Sequence[int]) -> np.ndarray:
    """Pixels of each code, ``(256,)`` over the piece or ``(rows, 256)`` per row.

    Comparing with each legend code (``codes``) is about 3 times faster than
    ``np.bincount`` (which widens every uint8 pixel to 64 bits); a full
    bincount is done only when the piece holds other codes.
    """
    axis = 1 if per_row else None
    counts = np.zeros((data.shape[0], CODES) if per_row else CODES, np.int64)
    for code in (NODATA, *codes):
        counts[..., code] = np.count_nonzero(data == code, axis=axis)
    if counts.sum() == data.size:
        return counts
    if per_row:
        return np.stack([np.bincount(row, minlength=CODES) for row in data])
    return np.bincount(data.ravel(), minlength=CODES)


def class_km2(areas: PixelAreas, window: Window, data: np.ndarray, codes: Sequence[int] = ()) -> np.ndarray:
    """Area in km² of each code (index 0..255) of a piece of classes lying on ``window``.

    ``codes``: the legend's, counted first (faster); any other code is counted too.
    """
    data = np.asarray(data, dtype=np.uint8)
    if areas.method == "constant":
        return _code_counts(data, False, codes) * areas.constant_km2
    if areas.method == "rows":
        return areas.rows_km2(window) @ _code_counts(data, True, codes)
    total = np.zeros(CODES)
    for r in range(0, window.height, _STRIP):
        strip = Window(window.row0 + r, window.col0, min(window.row0 + r + _STRIP, window.row1),
                       window.col1)
        weights = areas.pixels_km2(strip)
        total += np.bincount(data[r:r + strip.height].ravel(), weights=weights.ravel(),
                             minlength=CODES)
    return total


def as_table(km2: np.ndarray) -> dict[int, float]:
    """Per-code areas without nodata and without codes that cover nothing."""
    return {int(c): float(km2[c]) for c in np.flatnonzero(km2) if c != NODATA}


@dataclass(frozen=True)
class ProvinceAreas:
    """One row of the statistics: a province's class areas and whether all its chunks were done.

    ``chunks`` (the COG's ``SINOLC_CHUNKS``, row-by-row ranges), ``chunk_count``,
    ``no_imagery`` and ``imagery_share`` say which chunks the file holds and what
    share of them imagery covered (:class:`sinolc_dist.deliver.catalog.Contents`);
    ``None`` for a file written before it recorded them.
    """

    adcode: str
    name_en: str
    name_zh: str
    complete: bool
    file: str
    km2: dict[int, float]
    chunks: str = ""
    chunk_count: int = 0
    no_imagery: int = 0
    imagery_share: float | None = None

    @property
    def total(self) -> float:
        """Area of all classes."""
        return sum(self.km2.values())


def _total_share(rows: Sequence[ProvinceAreas]) -> float | None:
    """The provinces' imagery share weighted by the chunks each counted (``None`` when none says)."""
    known = [(r.imagery_share, r.chunk_count + r.no_imagery) for r in rows if r.imagery_share is not None]
    weight = sum(n for _, n in known)
    return sum(share * n for share, n in known) / weight if weight else None


def _share_text(share: float | None) -> str:
    return "" if share is None else f"{share:.6f}"


def _columns(rows: Sequence[ProvinceAreas], legend: Legend) -> list[int]:
    """The legend's codes, then any other code a province holds (a model with more classes)."""
    others = sorted({c for r in rows for c in r.km2} - set(legend.codes))
    return [*legend.codes, *others]


def write_tables(folder: Path, rows: Sequence[ProvinceAreas], meta: dict[str, str],
                 legend: Legend = SINOLC) -> tuple[Path, Path]:
    """Write ``classes_km2.csv`` and ``classes_km2.json`` (provinces × classes, plus the sum).

    ``meta`` (run id, grid CRS, area method…) goes into the JSON; ``legend``
    names the columns.  Both files are written atomically; returns their paths.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the statistics folder {folder} ({exc.strerror}): "
                         "make the run directory writable") from None
    codes = _columns(rows, legend)
    _name = legend.name_of
    total = {c: sum(r.km2.get(c, 0.0) for r in rows) for c in codes}
    complete = all(r.complete for r in rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    share = _total_share(rows)
    writer.writerow(["adcode", "province", "province_zh", "complete",
                     *(_name(c) for c in codes), "total", "chunks", "no_imagery_chunks", "imagery_share"])
    for r in rows:
        writer.writerow([r.adcode, r.name_en, r.name_zh, "yes" if r.complete else "no",
                         *(f"{r.km2.get(c, 0.0):.6f}" for c in codes), f"{r.total:.6f}",
                         r.chunk_count, r.no_imagery, _share_text(r.imagery_share)])
    writer.writerow(["", "total", "合计", "yes" if complete else "no",
                     *(f"{total[c]:.6f}" for c in codes), f"{sum(total.values()):.6f}",
                     sum(r.chunk_count for r in rows), sum(r.no_imagery for r in rows), _share_text(share)])
    doc = {
        **meta,
        "unit": "km2",
        "classes": {str(c): _name(c) for c in codes},
        "provinces": [
            {"adcode": r.adcode, "name": r.name_en, "name_zh": r.name_zh, "complete": r.complete,
             "file": r.file, "km2": {str(c): r.km2.get(c, 0.0) for c in codes}, "total": r.total,
             "chunks": r.chunks, "chunk_count": r.chunk_count, "no_imagery_chunks": r.no_imagery,
             "imagery_share": r.imagery_share}
            for r in rows
        ],
        "total": {"complete": complete, "km2": {str(c): v for c, v in total.items()},
                  "total": sum(total.values()), "chunk_count": sum(r.chunk_count for r in rows),
                  "no_imagery_chunks": sum(r.no_imagery for r in rows), "imagery_share": share},
    }
    csv_path, json_path = folder / "classes_km2.csv", folder / "classes_km2.json"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(json_path, json.dumps(doc, indent=2, ensure_ascii=False))
    return csv_path, json_path
