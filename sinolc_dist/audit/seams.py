"""Seams against a tile grid: tiles offset by whole pixels from a neighbour, and nodata slivers between tiles.

A map stitched from tiles shows its defects on the tile lines.  :class:`SeamLines`
keeps :data:`DEPTH` lines each side of every grid line (columns beside the
vertical lines, rows beside the horizontal ones) as the file streams past;
:func:`find_seams` checks each tile's stretch of each line:

- **offset** along the line: the first line past the boundary matches the last
  line before it best when shifted by ``d`` px (``d != 0``), clearly better than
  unshifted and about as well as neighbouring lines inside a tile match;
- **overlap** across the line: the tile's first ``k`` lines repeat the ``k``
  lines before the boundary (an offset of ``-k`` px), where ground ``k`` px
  apart naturally differs;
- **gap**: ``k`` lines of nodata on the boundary with data on both sides.

Natural content matches across a tile line as it does inside a tile, so it
makes none of these; a finding also needs :data:`_EVIDENCE` more pixels that
differ unaligned than aligned.  Grids of 128 px and more gave no false finding
in the tests or on the demo's output; finer grids (short stretches) may flag
the odd chance pattern.  Offsets up to :data:`MAX_SHIFT` px along the line and
overlaps and gaps up to :data:`DEPTH` px are seen; a wider overlap over the
whole file is a duplicated strip (:mod:`sinolc_dist.audit.strips`).

A tile shifted *across* a line skips ground on one side and repeats it on the
other: it is found by the offsets along the lines across it and, where ground
``k`` px apart differs enough, by the overlap.  The skipped side is not
reported on its own: the missing ground is nowhere in the map, so it looks like
any edge lying on the line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Lines kept each side of a grid line (largest overlap or gap seen).
DEPTH = 4
#: Largest offset along a line that is searched for.
MAX_SHIFT = 8
#: Pixels of a stretch that must hold data on both sides for a comparison to count.
_MIN_PIXELS = 32
#: Pixels that must differ more unaligned than aligned before a stretch is called a seam.
_EVIDENCE = 12


@dataclass(frozen=True)
class Seam:
    """One defect on a tile line.

    Attributes:
        axis: ``columns`` for a vertical tile line (between two columns), ``rows`` for a horizontal one.
        position: The first column (row) after the line.
        start: First row (column) of the stretch along the line (one tile).
        end: One past its last row (column).
        kind: ``offset``, ``overlap`` or ``gap``.
        shift: Pixels: the offset along the line (``offset``), ``-k`` (``overlap``), the width (``gap``).
        score: Mismatch share unshifted vs shifted (``offset``, ``overlap``), nodata share (``gap``).

    """

    axis: str
    position: int
    start: int
    end: int
    kind: str
    shift: int
    score: float

    def to_dict(self) -> dict[str, object]:
        """Plain JSON data."""
        return asdict(self)


class SeamLines:
    """Collector: the :data:`DEPTH` columns and rows each side of every line of a ``tile`` px grid."""

    def __init__(self, height: int, width: int, dtype: str, tile: int) -> None:
        self.tile = tile
        self.col_lines = np.arange(tile, width - DEPTH + 1, tile)
        self.row_lines = np.arange(tile, height - DEPTH + 1, tile)
        self.col_lines = self.col_lines[self.col_lines >= DEPTH]
        self.row_lines = self.row_lines[self.row_lines >= DEPTH]
        offsets = np.arange(-DEPTH, DEPTH)
        self._cols = (self.col_lines[:, None] + offsets).ravel()
        self._rows = (self.row_lines[:, None] + offsets).ravel()
        self.columns = np.zeros((self.col_lines.size, 2 * DEPTH, height), dtype)
        self.rows = np.zeros((self.row_lines.size, 2 * DEPTH, width), dtype)

    def add(self, row0: int, band: np.ndarray) -> None:
        """Keep the band's pixels in the columns beside vertical lines and its rows beside horizontal ones."""
        row1 = row0 + band.shape[0]
        self.columns[:, :, row0:row1] = band[:, self._cols].T.reshape((*self.columns.shape[:2], -1))
        inside = (self._rows >= row0) & (self._rows < row1)
        flat = self.rows.reshape(-1, self.rows.shape[2])
        flat[inside] = band[self._rows[inside] - row0]


def find_seams(lines: SeamLines, nodata: int | None) -> list[Seam]:
    """Every offset, overlap and gap on the grid's lines, tile by tile.

    Why: a mosaic must line up with its neighbours pixel for pixel; a tile
    stitched a few pixels off, or a sliver of nodata between tiles, is found here.
    """
    found = []
    for axis, positions, stack in (("columns", lines.col_lines, lines.columns),
                                   ("rows", lines.row_lines, lines.rows)):
        for position, block in zip(positions.tolist(), stack, strict=True):
            for start in range(0, block.shape[1], lines.tile):
                end = min(block.shape[1], start + lines.tile)
                seam = _check(block, start, end, nodata)
                if seam is not None:
                    found.append(Seam(axis, position, start, end, *seam))
    return found


def _check(block: np.ndarray, start: int, end: int, nodata: int | None) -> tuple[str, int, float] | None:
    """The defect on one tile's stretch of a line (``block``: 2·DEPTH lines across it), if any."""
    if nodata is not None and (gap := _gap(block[:, start:end], nodata)) is not None:
        return gap
    return _offset(block, start, end, nodata) or _overlap(block[:, start:end], nodata)


def _mismatch(a: np.ndarray, b: np.ndarray, nodata: int | None) -> np.ndarray:
    """Share of pixels that differ along the last axis where both hold data; NaN where too few do."""
    counted = np.ones(np.broadcast_shapes(a.shape, b.shape), bool) if nodata is None \
        else (a != nodata) & (b != nodata)
    n = counted.sum(axis=-1)
    share = ((a != b) & counted).sum(axis=-1) / np.maximum(n, 1)
    return np.where(n >= _MIN_PIXELS, share, np.nan)


def _shifted(block: np.ndarray, first: int, second: int, lo: int, hi: int, nodata: int | None) -> np.ndarray:
    """Mismatch of line ``first`` with line ``second`` shifted by ``-MAX_SHIFT … MAX_SHIFT`` px along it."""
    windows = np.lib.stride_tricks.sliding_window_view(block[second, lo - MAX_SHIFT:hi + MAX_SHIFT], hi - lo)
    return _mismatch(block[first, lo:hi][None, :], windows, nodata)


def _offset(block: np.ndarray, start: int, end: int, nodata: int | None) -> tuple[str, int, float] | None:
    """An offset along the line: the lines either side match best shifted by ``d != 0`` px.

    Sloping ground makes neighbouring lines match best at some shift everywhere:
    the offset is the boundary's best shift less the best shift inside the
    tiles, and inside the tiles lines must match clearly worse at the boundary's.
    """
    lo, hi = max(start, MAX_SHIFT), min(end, block.shape[1] - MAX_SHIFT)
    if hi - lo < 4 * MAX_SHIFT:
        return None
    across = _shifted(block, DEPTH - 1, DEPTH, lo, hi, nodata)
    inside = (_shifted(block, DEPTH - 2, DEPTH - 1, lo, hi, nodata)
              + _shifted(block, DEPTH, DEPTH + 1, lo, hi, nodata)) / 2
    if np.isnan(across).any() or np.isnan(inside).any():
        return None
    tie = 1e-9 * np.abs(np.arange(-MAX_SHIFT, MAX_SHIFT + 1))  # equal mismatch: the smaller shift
    best, slope = int(np.argmin(across + tie)), int(np.argmin(inside + tie))
    low = across[best]
    if best != slope and across[slope] >= 2 * low + 0.05 and low <= inside[slope] + 0.05 \
            and inside[best] >= 1.5 * low + 0.03 and (across[slope] - low) * (hi - lo) >= _EVIDENCE:
        return "offset", best - slope, round(float(across[slope]), 4)
    return None


def _overlap(block: np.ndarray, nodata: int | None) -> tuple[str, int, float] | None:
    """An overlap across the line: the first ``k`` lines after it repeat the ``k`` before it.

    Ground ``k`` px apart must differ everywhere inside the tiles (the smallest
    mismatch of any pair ``k`` lines apart on one side), else it is natural.
    """
    for k in range(1, DEPTH):
        across = float(_mismatch(block[DEPTH:DEPTH + k].ravel(), block[DEPTH - k:DEPTH].ravel(), nodata))
        pairs = [(j, j + k) for j in range(2 * DEPTH - k) if (j + k < DEPTH) or j >= DEPTH]
        natural = np.array([_mismatch(block[a], block[b], nodata) for a, b in pairs])
        if np.isnan(across) or np.isnan(natural).any():
            continue
        evidence = (natural.min() - across) * k * block.shape[1]
        if natural.min() >= 0.1 and across <= 0.3 * natural.min() and evidence >= _EVIDENCE:
            return "overlap", -k, round(across, 4)
    return None


def _gap(block: np.ndarray, nodata: int) -> tuple[str, int, float] | None:
    """Lines of nodata on the boundary with data on both sides (a sliver between tiles)."""
    empty = (block == nodata).mean(axis=1)
    full = empty >= 0.9
    if not (full[DEPTH - 1] or full[DEPTH]):
        return None
    lo = hi = DEPTH - 1 if full[DEPTH - 1] else DEPTH
    while lo > 0 and full[lo - 1]:
        lo -= 1
    while hi < 2 * DEPTH - 1 and full[hi + 1]:
        hi += 1
    if lo == 0 or hi == 2 * DEPTH - 1 or empty[lo - 1] > 0.5 or empty[hi + 1] > 0.5:
        return None  # a large nodata area, or no data beside it: not a sliver
    return "gap", hi - lo + 1, round(float(empty[lo:hi + 1].mean()), 4)
