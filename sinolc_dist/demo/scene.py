"""Seeded synthetic 1 m land-cover scenes: an RGB image and its SinoLC-1 label map.

The scene imitates rural China at 1 m ground resolution: a patchwork of rectangular crop
parcels with row texture (and some grass, barren, scrub and plantation parcels), blobby
woods, scrub and meadows, lakes and a meandering river fringed by wetland, straight,
curved and field roads, and villages of rectangular roofs casting shadows to the north.
Every object gets a class base colour with its own tone, class-specific band-limited
texture and sensor noise, so classes are told apart by colour, texture and context the
way a real 1 m classifier has to; an L2HNet (23 px receptive field) learns it to well
over 90 % overall accuracy, which the shipped demo checkpoint and the end-to-end tests
rely on.  Pure numpy, deterministic per seed, about a second for 2048 × 2048 px.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

ROAD, TREE, SHRUB, GRASS, CROP, BUILDING, BARREN, WATER, WETLAND = 1, 2, 3, 4, 5, 6, 7, 9, 10

#: Legend codes ``make_scene`` emits (snow/ice 8 and moss/lichen 11 never occur).
CLASSES_USED: tuple[int, ...] = (ROAD, TREE, SHRUB, GRASS, CROP, BUILDING, BARREN, WATER, WETLAND)

#: Candidate base colours (0-255 RGB) per class; each object draws one and tints it.
_PALETTE: dict[int, tuple[tuple[int, int, int], ...]] = {
    ROAD: ((108, 108, 112), (146, 144, 140)),
    TREE: ((46, 68, 40), (54, 76, 46)),
    SHRUB: ((118, 112, 78),),
    GRASS: ((126, 146, 80),),
    CROP: ((112, 150, 76), (150, 164, 94), (180, 172, 118)),
    BUILDING: ((196, 92, 62), (214, 124, 74), (146, 158, 178), (224, 220, 210)),
    BARREN: ((192, 180, 160), (172, 160, 142)),
    WATER: ((34, 58, 74), (44, 70, 80)),
    WETLAND: ((62, 88, 72),),
}

#: Relative brightness texture per class: fine grain (2 px), crowns (4 px), patches (24 px).
_TEXTURE = np.zeros((max(_PALETTE) + 1, 3), np.float32)
_TEXTURE[ROAD] = (0.025, 0.0, 0.03)
_TEXTURE[TREE] = (0.08, 0.28, 0.08)
_TEXTURE[SHRUB] = (0.10, 0.16, 0.06)
_TEXTURE[GRASS] = (0.05, 0.03, 0.09)
_TEXTURE[CROP] = (0.03, 0.0, 0.03)
_TEXTURE[BUILDING] = (0.02, 0.0, 0.0)
_TEXTURE[BARREN] = (0.06, 0.02, 0.06)
_TEXTURE[WATER] = (0.01, 0.0, 0.05)
_TEXTURE[WETLAND] = (0.07, 0.16, 0.14)

_SENSOR_NOISE = 2.5  # digital numbers (0-255 scale), independent per band and pixel
_SHADOW_GAIN = 0.45  # brightness of ground in a building's shadow
_PARCEL_CODES = (CROP, GRASS, BARREN, SHRUB, TREE)
_PARCEL_PROBS = (0.70, 0.12, 0.06, 0.05, 0.07)


def make_scene(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw a synthetic 1 m scene: ``rgb`` uint8 ``(3, H, W)`` and ``labels`` uint8 ``(H, W)``.

    Labels are SinoLC-1 legend codes from ``CLASSES_USED`` (never 0).  The same
    ``(height, width, seed)`` always gives identical arrays, so scenes can stand in for
    imagery in tests, benchmarks and the demo model's training and evaluation.
    """
    if height < 64 or width < 64:
        raise ValueError(f"scene must be at least 64 x 64 px, got {height} x {width}")
    rng = np.random.default_rng(seed)
    cv = _Canvas(rng, height, width)
    rows = _paint_parcels(cv)
    _paint_blobs(cv)
    _paint_river(cv)
    for _ in range(max(1, rng.poisson(cv.area / 1.5e6))):
        _paint_lake(cv)
    _paint_roads(cv, rows)
    for _ in range(max(1, rng.poisson(cv.area / 1.0e6))):
        _paint_village(cv)
    for _ in range(rng.poisson(cv.area / 2.5e5)):
        _paint_farm_building(cv)
    return _render(cv), cv.labels


@dataclass
class _Canvas:
    """Label and object maps under construction, with per-object colour and row texture."""

    rng: np.random.Generator
    height: int
    width: int
    labels: np.ndarray = field(init=False)
    objects: np.ndarray = field(init=False)
    coarse: np.ndarray = field(init=False)  # smooth noise, ~96 px features (shapes, widths)
    patch: np.ndarray = field(init=False)  # smooth noise, ~24 px features (fringes, texture)
    colours: list[np.ndarray] = field(default_factory=list)
    stripes: list[tuple[float, float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.full((self.height, self.width), CROP, np.uint8)
        self.objects = np.zeros((self.height, self.width), np.int32)
        self.coarse = _noise(self.rng, self.height, self.width, 96.0)
        self.patch = _noise(self.rng, self.height, self.width, 24.0)

    @property
    def area(self) -> int:
        """Scene area in px (= m²), which sets how many lakes, roads and villages appear."""
        return self.height * self.width

    def new_object(
        self,
        code: int,
        stripes: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 0.0),
        colour: int | None = None,
    ) -> int:
        """Register an object of class ``code`` with its own tinted colour; return its id.

        ``stripes`` is (amplitude, period px, angle rad, phase) of crop-row texture;
        ``colour`` picks a palette entry instead of drawing one.
        """
        palette = _PALETTE[code]
        pick = self.rng.integers(len(palette)) if colour is None else colour
        tint = 1.0 + 0.06 * self.rng.standard_normal() + 0.03 * self.rng.standard_normal(3)
        self.colours.append(np.asarray(palette[pick], np.float32) * tint.astype(np.float32))
        self.stripes.append(stripes)
        return len(self.colours) - 1

    def paint(self, window: tuple[slice, slice], mask: np.ndarray, code: int, obj: int) -> None:
        """Set ``mask`` (within ``window``) to class ``code`` and object ``obj``."""
        self.labels[window][mask] = code
        self.objects[window][mask] = obj


def _noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth value noise with features about ``scale`` px across, zero mean, unit std."""
    grid = rng.standard_normal((int(h / scale) + 3, int(w / scale) + 3), dtype=np.float32)
    out = _smooth_interp(_smooth_interp(grid, w, scale, rng, axis=1), h, scale, rng, axis=0)
    sample = out[::7, ::7]
    return (out - sample.mean()) / max(float(sample.std()), 1e-6)


def _smooth_interp(grid: np.ndarray, n: int, scale: float, rng: np.random.Generator, axis: int) -> np.ndarray:
    """Upsample ``grid`` to ``n`` samples along ``axis`` with smoothstep interpolation."""
    t = np.arange(n, dtype=np.float32) / np.float32(scale) + np.float32(rng.uniform(0, 1))
    i = t.astype(np.int64)
    f = t - i
    f = f * f * (3 - 2 * f)
    if axis == 0:
        return grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return grid[:, i] * (1 - f) + grid[:, i + 1] * f


def _cuts(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """Boundaries ``0 = b0 < b1 < ... = n`` with gaps drawn from ``[lo, hi)``."""
    gaps = rng.integers(lo, hi, size=n // lo + 2)
    bounds = np.concatenate([[0], np.cumsum(gaps)])
    return np.append(bounds[bounds < n], n)


def _paint_parcels(cv: _Canvas) -> np.ndarray:
    """Tile the scene with rectangular parcels (mostly cropland); return the row cuts."""
    rows = _cuts(cv.rng, cv.height, 60, 200)
    for r0, r1 in itertools.pairwise(rows):
        cols = _cuts(cv.rng, cv.width, 40, 180)
        ids = []
        for c0, c1 in itertools.pairwise(cols):
            code = int(cv.rng.choice(_PARCEL_CODES, p=_PARCEL_PROBS))
            stripes = (0.0, 1.0, 0.0, 0.0)
            if code == CROP:  # rows run along the parcel's long side
                angle = (0.0 if c1 - c0 >= r1 - r0 else np.pi / 2) + cv.rng.normal(0, 0.03)
                stripes = (
                    cv.rng.uniform(0.05, 0.12),
                    cv.rng.uniform(4.0, 9.0),
                    angle,
                    cv.rng.uniform(0, 2 * np.pi),
                )
            ids.append((code, cv.new_object(code, stripes)))
        col_index = np.repeat(np.arange(len(cols) - 1), np.diff(cols))
        table = np.asarray(ids)
        cv.labels[r0:r1] = table[col_index, 0]
        cv.objects[r0:r1] = table[col_index, 1]
    return rows


def _paint_blobs(cv: _Canvas) -> None:
    """Paint woods, scrub and meadows: blobby patches from thresholded smooth noise."""
    woods = _noise(cv.rng, cv.height, cv.width, 48.0) + 0.3 * cv.patch
    open_land = _noise(cv.rng, cv.height, cv.width, 64.0) - 0.3 * cv.patch
    for code, field_, cover in ((TREE, woods, 0.13), (SHRUB, open_land, 0.06)):
        _threshold_blobs(cv, code, field_, cover)
    _threshold_blobs(cv, GRASS, -open_land, 0.06)


def _threshold_blobs(cv: _Canvas, code: int, values: np.ndarray, cover: float) -> None:
    """Paint ``code`` where ``values`` is in its top ``cover`` fraction, sparing woods.

    Each blob takes one of 64 new objects according to the object under it, so blobs
    in different parcels get different tones.
    """
    mask = values > np.quantile(values[::8, ::8], 1.0 - cover)
    if code != TREE:
        mask &= cv.labels != TREE
    ids = np.asarray([cv.new_object(code) for _ in range(64)], np.int32)
    cv.labels = np.where(mask, np.uint8(code), cv.labels)
    cv.objects = np.where(mask, ids[cv.objects % len(ids)], cv.objects)


def _meander_distance(cv: _Canvas, amplitude: float, wavelength: float) -> np.ndarray:
    """Distance (px) from a random line crossing the scene, bent into a sine meander."""
    angle = cv.rng.uniform(0, np.pi)
    cy, cx = cv.rng.uniform(0.25, 0.75) * cv.height, cv.rng.uniform(0.25, 0.75) * cv.width
    phase = cv.rng.uniform(0, 2 * np.pi)
    ys = np.arange(cv.height, dtype=np.float32)[:, None] - np.float32(cy)
    xs = np.arange(cv.width, dtype=np.float32)[None, :] - np.float32(cx)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    across = ys * c - xs * s
    if amplitude:
        along = xs * c + ys * s
        wave = np.sin(along * np.float32(2 * np.pi / wavelength) + np.float32(phase))
        across = across - np.float32(amplitude) * wave
    return np.abs(across)


def _paint_river(cv: _Canvas) -> None:
    """Paint a meandering river band of varying width, fringed in places by wetland."""
    d = _meander_distance(cv, cv.rng.uniform(20, 70), cv.rng.uniform(300, 800))
    half = cv.rng.uniform(9, 18) * (1 + 0.25 * cv.coarse)
    fringe = half + cv.rng.uniform(5, 16)
    everything = (slice(None), slice(None))
    cv.paint(everything, (d < fringe) & (cv.patch > -0.2), WETLAND, cv.new_object(WETLAND))
    cv.paint(everything, d < half, WATER, cv.new_object(WATER))


def _paint_lake(cv: _Canvas) -> None:
    """Paint an irregular elliptic lake with a partial wetland fringe."""
    r = cv.rng.uniform(40, 140)
    b = r * cv.rng.uniform(0.5, 1.0)
    angle = cv.rng.uniform(0, np.pi)
    cy, cx = cv.rng.uniform(0, cv.height), cv.rng.uniform(0, cv.width)
    y0, y1 = max(0, int(cy - 1.6 * r)), min(cv.height, int(cy + 1.6 * r) + 1)
    x0, x1 = max(0, int(cx - 1.6 * r)), min(cv.width, int(cx + 1.6 * r) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    window = (slice(y0, y1), slice(x0, x1))
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u, v = (xs * c + ys * s) / np.float32(r), (ys * c - xs * s) / np.float32(b)
    f = np.sqrt(u * u + v * v) + 0.3 * cv.coarse[window]
    fringe = 1.0 + cv.rng.uniform(8, 20) / r
    cv.paint(window, (f < fringe) & (cv.patch[window] > -0.3), WETLAND, cv.new_object(WETLAND))
    cv.paint(window, f < 1.0, WATER, cv.new_object(WATER))


def _paint_roads(cv: _Canvas, rows: np.ndarray) -> None:
    """Straight trunk roads, winding roads and field roads along parcel edges."""
    everything = (slice(None), slice(None))
    for _ in range(max(1, cv.rng.poisson(cv.area / 2.0e6))):
        d = _meander_distance(cv, 0.0, 1.0)
        cv.paint(everything, d < cv.rng.uniform(4, 6), ROAD, cv.new_object(ROAD, colour=0))
    for _ in range(max(1, cv.rng.poisson(cv.area / 3.0e6))):
        d = _meander_distance(cv, cv.rng.uniform(30, 120), cv.rng.uniform(400, 1200))
        cv.paint(everything, d < cv.rng.uniform(3, 4.5), ROAD, cv.new_object(ROAD))
    for r in rows[1:-1]:
        if cv.rng.uniform() < 0.3:
            half = int(cv.rng.integers(2, 4))
            window = (slice(max(0, r - half), r + half), slice(None))
            cv.paint(window, cv.labels[window] != WATER, ROAD, cv.new_object(ROAD, colour=1))
    for _ in range(cv.rng.poisson(cv.width / 700)):
        x, half = int(cv.rng.integers(0, cv.width)), int(cv.rng.integers(2, 4))
        window = (slice(None), slice(max(0, x - half), x + half))
        cv.paint(window, cv.labels[window] != WATER, ROAD, cv.new_object(ROAD, colour=1))


def _paint_village(cv: _Canvas) -> None:
    """Paint a village: bare ground, a grid of lots holding rectangular houses, lanes."""
    rng = cv.rng
    vh, vw = int(rng.integers(100, 280)), int(rng.integers(100, 280))
    y0 = int(rng.integers(0, max(1, cv.height - vh // 2)))
    x0 = int(rng.integers(0, max(1, cv.width - vw // 2)))
    y1, x1 = min(cv.height, y0 + vh), min(cv.width, x0 + vw)
    window = (slice(y0, y1), slice(x0, x1))
    ground = ~np.isin(cv.labels[window], (WATER, WETLAND, ROAD))
    cv.paint(window, ground, BARREN, cv.new_object(BARREN, colour=1))
    ly, lx = int(rng.integers(16, 26)), int(rng.integers(16, 26))
    for ly0 in range(y0, y1 - ly + 1, ly):
        for lx0 in range(x0, x1 - lx + 1, lx):
            if rng.uniform() < 0.85:
                _paint_house(cv, ly0, lx0, ly, lx)
    for axis in (0, 1):
        start, stop, lot = (y0, y1, ly) if axis == 0 else (x0, x1, lx)
        n_lots = (stop - start) // lot
        if n_lots >= 2:
            at = start + lot * int(rng.integers(1, n_lots))
            half = int(rng.integers(2, 4))
            band = slice(at - half, at + half)
            lane = (band, window[1]) if axis == 0 else (window[0], band)
            cv.paint(lane, cv.labels[lane] != WATER, ROAD, cv.new_object(ROAD, colour=1))


def _paint_house(cv: _Canvas, ly0: int, lx0: int, ly: int, lx: int) -> None:
    """One house roof inside the lot at (``ly0``, ``lx0``) of size ``ly × lx``, if on dry land."""
    rng = cv.rng
    bh, bw = int(rng.integers(max(6, ly // 2), ly - 2)), int(rng.integers(max(8, lx // 2), lx - 2))
    oy, ox = ly0 + int(rng.integers(1, ly - bh)), lx0 + int(rng.integers(1, lx - bw))
    window = (slice(oy, oy + bh), slice(ox, ox + bw))
    if np.isin(cv.labels[window], (WATER, WETLAND, ROAD)).any():
        return
    cv.paint(window, np.ones((bh, bw), bool), BUILDING, cv.new_object(BUILDING))


def _paint_farm_building(cv: _Canvas) -> None:
    """Paint an isolated farm building or shed standing in the fields."""
    y, x = int(cv.rng.integers(0, cv.height - 24)), int(cv.rng.integers(0, cv.width - 24))
    _paint_house(cv, y, x, 24, 24)


def _render(cv: _Canvas) -> np.ndarray:
    """Turn the label/object maps into a noisy uint8 RGB image ``(3, H, W)``."""
    rng, lab, obj = cv.rng, cv.labels, cv.objects
    h, w = lab.shape
    bright = 1.0 + _TEXTURE[:, 0][lab] * _noise(rng, h, w, 2.0)
    bright += _TEXTURE[:, 1][lab] * _noise(rng, h, w, 4.0)
    bright += _TEXTURE[:, 2][lab] * cv.patch
    amp, period, angle, phase = np.asarray(cv.stripes, np.float32).T
    kx, ky = np.cos(angle) * (2 * np.pi / period), np.sin(angle) * (2 * np.pi / period)
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]
    bright += amp[obj] * np.sin(xs * kx[obj] + ys * ky[obj] + phase[obj])
    rows = lab == CROP
    margin = np.zeros_like(rows)
    margin[:, 1:] |= obj[:, 1:] != obj[:, :-1]
    margin[1:] |= obj[1:] != obj[:-1]
    bright[margin & rows] *= 0.9
    houses = lab == BUILDING
    shadow = np.zeros_like(houses)
    for dy in range(1, 4):  # sun in the south: shadows fall north (up) and a little west
        shadow[:-dy, :-1] |= houses[dy:, 1:]
    bright[shadow & ~houses] *= _SHADOW_GAIN
    colours = np.stack(cv.colours)
    rgb = np.empty((3, h, w), np.uint8)
    for band in range(3):
        value = colours[:, band][obj] * bright
        value += rng.standard_normal((h, w), dtype=np.float32) * np.float32(_SENSOR_NOISE)
        np.rint(np.clip(value, 0, 255, out=value), out=value)
        rgb[band] = value
    return rgb
