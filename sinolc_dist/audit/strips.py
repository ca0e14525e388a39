"""Duplicated strips: a run of columns (or rows) that repeats the run just before it.

Stitching tiles by the wrong offset leaves a strip ``[s, s+w)`` whose every
column ``c`` shows the ground of column ``c - w``.  Along one axis the search
works on a *profile*: a few hundred to a thousand sampled lines across the
file (sampled rows for column strips, sampled columns for row strips, kept by
:class:`Samples` as the file streams past), one value per position.

1. **Screening** (every shift ``w`` from ``min_width`` to half the length): the
   profile's sampled lines are hashed in words of :data:`_WORD` lines; at every
   ``stride``-th position the share of words equal to those ``w`` positions back is
   counted.  A strip shows as a run of about ``w / stride`` positions where most
   words match; constant words (uniform ground, nodata) count for nothing.
2. **Verification** of each such run on every sampled line: the per-position
   mismatch ``m(c)`` between ``c`` and ``c - w`` (over lines where either is not
   nodata) must stay below :data:`INSIDE` (copies differ near tile edges: a few
   percent is tolerated) for exactly ``w`` positions, rise above :data:`OUTSIDE` just
   outside them, and the strip must have content: compared with a shift of
   ``w / 2`` it must mismatch clearly (uniform water, desert or nodata repeat at
   every shift).  A periodic pattern matches over far more than ``w`` positions and
   is never a strip.

The start and width are exact: the width is the shift, the start where the
low-mismatch run begins.  The similarity score is ``1 - mean m`` inside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sinolc_dist.audit.source import spread

#: Largest mismatch share inside a strip (copies differ in up to a few percent of pixels).
INSIDE = 0.08
#: Smallest mismatch share just outside a strip (natural ground ``w`` px apart differs).
OUTSIDE = 0.15
#: Smallest mismatch share of a strip against a shift of half its width (it has content).
CONTENT = 0.05
#: Sampled lines hashed into one word for screening, and words used.
_WORD, _WORDS = 6, 16
#: A screened position matches when at least this share of its informative words match.
_SCREEN = 0.5
#: Screened positions in a row that may fail inside a long run (changed pixels in words of little content).
_SCREEN_HOLES = 3
#: Sampled lines needed (non-nodata) for a position to count in verification.
_MIN_LINES = 16
#: Positions each side of a strip whose mismatch is compared with the inside (at most).
_MARGIN = 32
#: The two axes, named as a user writes them in ``--strip``.
AXES = ("columns", "rows")


@dataclass(frozen=True)
class Strip:
    """One duplicated strip: ``[start, start + width)`` on ``axis`` repeats the ``width`` lines before it.

    Attributes:
        axis: ``columns`` or ``rows``.
        start: First column (row) of the duplicate, 0-based, in the file's pixels.
        width: Columns (rows) it spans; also the shift of the copy.
        similarity: ``1 -`` the share of sampled pixels that differ from the copy's source
            (``None`` for a strip given by hand).
        outside: The share that differs just outside the strip at the same shift.

    """

    axis: str
    start: int
    width: int
    similarity: float | None = None
    outside: float | None = None

    @property
    def end(self) -> int:
        """One past the strip's last column (row)."""
        return self.start + self.width

    def to_dict(self) -> dict[str, object]:
        """Plain JSON data."""
        return {**asdict(self), "end": self.end}


class Samples:
    """Collector: sampled rows (full width) and sampled columns (full height) of a streamed map."""

    def __init__(self, height: int, width: int, dtype: str, lines: int = 1024) -> None:
        self.row_index = spread(height, lines)
        self.col_index = spread(width, lines)
        self.rows = np.zeros((self.row_index.size, width), dtype)  # column-strip profile
        self.cols = np.zeros((self.col_index.size, height), dtype)  # row-strip profile

    def add(self, row0: int, band: np.ndarray) -> None:
        """Keep the sampled rows inside ``band`` and every row's value at the sampled columns."""
        row1 = row0 + band.shape[0]
        lo, hi = np.searchsorted(self.row_index, [row0, row1])
        self.rows[lo:hi] = band[self.row_index[lo:hi] - row0]
        self.cols[:, row0:row1] = band[:, self.col_index].T


def find_strips(profile: np.ndarray, axis: str, nodata: int | None, min_width: int = 16,
                max_width: int | None = None) -> list[Strip]:
    """Every duplicated strip along the positions of ``profile`` (sampled lines × positions).

    Why: a released map's duplicated strips must be found automatically, exactly
    (start and width), without flagging natural repetition; see the module docstring.
    """
    n = profile.shape[1]
    top = min(n // 2, max_width or n // 2)
    if top < min_width or profile.shape[0] == 0:
        return []
    stride = max(1, min_width // 2)
    found: dict[tuple[int, int], Strip] = {}
    for width, lo, hi in _screen(profile, stride, min_width, top):
        strip = _verify(profile, axis, nodata, width, lo, hi, stride)
        if strip is not None:
            found.setdefault((strip.start, strip.width), strip)
    return _best(list(found.values()))


def _words(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of groups of :data:`_WORD` sampled lines (words × positions) and which words are informative."""
    lines = profile.shape[0]
    rng = np.random.default_rng(0)
    order = rng.permutation(lines)
    size = min(_WORD, lines)
    count = max(1, min(_WORDS, lines // size))
    groups = order[: count * size].reshape(count, size)
    keys = rng.integers(1, 2**63, size=size, dtype=np.uint64) | np.uint64(1)
    grouped = profile[groups]  # words × lines in a word × positions
    hashes = np.zeros((count, profile.shape[1]), np.uint64)
    for line in range(size):  # wraps modulo 2**64: a hash, not a sum
        hashes += (grouped[:, line].astype(np.uint64) + np.uint64(1)) * keys[line]
    informative = (grouped != grouped[:, :1]).any(axis=1)
    return hashes, informative


def _screen(profile: np.ndarray, stride: int, min_width: int, max_width: int) -> list[tuple[int, int, int]]:
    """Candidates ``(width, lo, hi)``: runs of about ``width`` px whose hashed words repeat ``width`` back."""
    hashes, informative = _words(profile)
    n = profile.shape[1]
    here, here_inf = hashes[:, ::stride], informative[:, ::stride]
    # positions ≡ offset (mod stride): where c - width falls for every c on the screened lattice
    back = [(hashes[:, offset::stride], informative[:, offset::stride]) for offset in range(stride)]
    out = []
    for width in range(min_width, max_width + 1):
        offset = (-width) % stride
        q = (width + offset) // stride  # here[:, k] pairs with back[offset][:, k - q]
        if q >= here.shape[1]:
            break
        prev, prev_inf = (a[:, : here.shape[1] - q] for a in back[offset])
        both = here_inf[:, q:] & prev_inf  # a word that is constant on either side tells nothing
        counted = both.sum(axis=0)
        hits = ((here[:, q:] == prev) & both).sum(axis=0) >= np.maximum(2, np.ceil(_SCREEN * counted))
        neutral = counted < 3
        out.extend((width, lo, hi) for lo, hi in _screened_runs(hits, neutral, width, stride, q, n))
    return out


def _screened_runs(hits: np.ndarray, neutral: np.ndarray, width: int, stride: int, q: int,
                   n: int) -> list[tuple[int, int]]:
    """Pixel ranges of the runs of matching positions about ``width`` long.

    Positions without content (uniform, nodata) are neutral: they may lie inside
    a strip's run, but the matching positions must span at least half of it.
    """
    found: list[tuple[int, int]] = []
    if not hits.any():
        return found
    expect = width // stride
    for lo, hi in _runs(hits | neutral, holes=max(1, min(_SCREEN_HOLES, expect // 8))):
        inside = np.flatnonzero(hits[lo:hi])
        if inside.size == 0:
            continue
        first, last = lo + int(inside[0]), lo + int(inside[-1]) + 1
        if hi - lo >= expect - 2 and expect // 2 - 2 <= last - first <= expect + 2:
            a, b = max(lo, first - expect), min(hi, last + expect)
            found.append(((a + q) * stride, min(n, (b + q) * stride)))
    return found


def _runs(mask: np.ndarray, holes: int = 1) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each run of True in a boolean array, holes of up to ``holes`` False filled."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.view(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    firsts = np.flatnonzero(np.concatenate([[True], starts[1:] - ends[:-1] > holes]))  # first of a merged run
    lasts = np.append(firsts[1:] - 1, starts.size - 1)
    return list(zip(starts[firsts].tolist(), ends[lasts].tolist(), strict=True))


def mismatch(profile: np.ndarray, nodata: int | None, shift: int, lo: int, hi: int) -> np.ndarray:
    """Share of sampled lines where position ``c`` differs from ``c - shift``, for ``c`` in ``[lo, hi)``.

    Lines where both are nodata do not count; a position with fewer than
    :data:`_MIN_LINES` counted lines gets 1 (nothing to compare is no match).
    """
    here, back = profile[:, lo:hi], profile[:, lo - shift:hi - shift]
    counted = np.ones(here.shape, bool) if nodata is None else (here != nodata) | (back != nodata)
    lines = counted.sum(axis=0)
    differ = ((here != back) & counted).sum(axis=0)
    share = differ / np.maximum(lines, 1)
    share[lines < min(_MIN_LINES, profile.shape[0])] = 1.0
    return share


def _verify(profile: np.ndarray, axis: str, nodata: int | None, width: int, lo: int, hi: int,
            stride: int) -> Strip | None:
    """The exact strip behind a screened run, or ``None`` when the run is not a duplicated strip."""
    n = profile.shape[1]
    margin = min(width, _MARGIN)
    a, b = max(width, lo - stride - margin), min(n, hi + stride + margin)
    m = mismatch(profile, nodata, width, a, b)
    runs = [(r0 + a, r1 + a) for r0, r1 in _runs(m <= INSIDE) if r0 + a < hi and r1 + a > lo]
    if not runs:
        return None
    r0, r1 = max(runs, key=lambda r: r[1] - r[0])
    if abs((r1 - r0) - width) > max(2, width // 32):
        return None
    start = r0
    if r1 - r0 > width:  # a few natural matches at an end: the ``width`` positions that match best
        start += int(np.argmin(np.convolve(m[r0 - a:r1 - a], np.ones(width), "valid")))
    if start + width > n or start - width < 0:
        return None
    inside = float(mismatch(profile, nodata, width, start, start + width).mean())
    outside = _outside(profile, nodata, width, start, margin)
    content = float(mismatch(profile, nodata, max(1, width // 2), start, start + width).mean())
    if outside < max(OUTSIDE, 3 * inside) or content < max(CONTENT, 1.5 * inside + 0.02):
        return None
    return Strip(axis, start, width, round(1 - inside, 4), round(outside, 4))


def _outside(profile: np.ndarray, nodata: int | None, width: int, start: int, margin: int) -> float:
    """Median mismatch at the strip's shift over ``margin`` positions each side (those inside the file)."""
    n = profile.shape[1]
    parts = []
    if (lo := max(width, start - margin)) < start:
        parts.append(mismatch(profile, nodata, width, lo, start))
    if start + width < n:
        parts.append(mismatch(profile, nodata, width, start + width, min(n, start + width + margin)))
    return float(np.median(np.concatenate(parts))) if parts else 0.0


def _best(strips: list[Strip]) -> list[Strip]:
    """Drop strips that overlap a more similar one (one finding per duplicate), in file order."""
    kept: list[Strip] = []
    for strip in sorted(strips, key=lambda s: (-(s.similarity or 0.0), s.start)):
        if all(strip.end <= k.start or strip.start >= k.end for k in kept):
            kept.append(strip)
    return sorted(kept, key=lambda s: s.start)
