"""``sample``: a reproducible random or stratified sample of a run's pixels, for visual interpretation.

The population is every pixel with a class (not 0) in the done chunks.  Strata:

``none``
    a simple random sample of the population;
``class``
    one stratum per map class (Olofsson et al. 2014's stratified random
    design; ``validate --points --strata class`` weights it back);
``province``
    one stratum per province, a pixel belonging to the province its centre lies in.

Allocation: each stratum first gets ``min(50, n / (2 × strata))`` points (rare
classes stay measurable), the rest in proportion to the strata's pixels.
Two passes over the done chunks, one chunk in memory at a time: the first
counts each stratum's pixels per chunk, then each stratum's draw (without
replacement, from ``numpy.random.default_rng(seed)``) is located by those
counts, and the second pass reads only the chunks holding a drawn pixel.  The
same run, ``n``, strata and seed give the same points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import Transformer
from rasterio.features import geometry_mask

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import LONLAT, ChunkId
from sinolc_dist.regions.region import to_crs
from sinolc_dist.rundir import stores
from sinolc_dist.validate import gpkg, result_files
from sinolc_dist.validate.runmap import RunMap

SAMPLE_STRATA = ("none", "class", "province")
#: A stratum's guaranteed share before proportional allocation (Olofsson et al.'s advice: ≥ 50 each).
MIN_PER_STRATUM = 50

#: For one chunk's classes, a boolean mask per stratum.
Masks = Callable[[ChunkId, np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class Sample:
    """Drawn pixels (grid rows and columns), each one's stratum, and the design."""

    rows: np.ndarray
    cols: np.ndarray
    stratum: np.ndarray
    strata: tuple[str, ...]
    population: np.ndarray
    drawn: np.ndarray
    seed: int

    def design(self) -> dict[str, object]:
        """The design as JSON data: strata, their population (pixels) and the points drawn."""
        return {"seed": self.seed, "n": int(self.drawn.sum()),
                "strata": [{"stratum": s, "population_px": int(p), "drawn": int(d)}
                           for s, p, d in zip(self.strata, self.population, self.drawn, strict=True)]}


def allocate(n: int, population: np.ndarray) -> np.ndarray:
    """Points per stratum: a floor each (see the module's docstring), the rest by population."""
    population = np.asarray(population, np.int64)
    n = min(n, int(population.sum()))
    alloc = np.minimum(population, min(MIN_PER_STRATUM, n // (2 * max(1, int((population > 0).sum())))))
    while (rest := n - int(alloc.sum())) > 0:
        room = population - alloc
        share = np.where(room > 0, population, 0) / np.where(room > 0, population, 0).sum() * rest
        add = np.minimum(np.floor(share).astype(np.int64), room)
        if not add.sum():  # the last few: largest remainders among strata with room
            order = np.argsort(-(share - np.floor(share)) - (room > 0) * 2, kind="stable")[:rest]
            add = np.zeros_like(alloc)
            add[order[room[order] > 0]] = 1
        alloc += add
    return alloc


def _strata_masks(rm: RunMap, strata: str) -> tuple[tuple[str, ...], Masks]:
    """Stratum names and the function giving each stratum's mask over a chunk's classes."""
    if strata == "none":
        return ("all",), lambda _cid, data: [data != 0]
    if strata == "class":
        codes = rm.legend.codes
        return tuple(rm.legend.name_of(c) for c in codes), lambda _cid, data: [data == c for c in codes]
    provinces = rm.provinces
    shapes = {p.adcode: to_crs(rm.geometries[p.adcode], rm.grid.crs) for p in provinces}
    tags = rm.chunk_tags(rm.done_chunks)

    def masks(cid: ChunkId, data: np.ndarray) -> list[np.ndarray]:
        """Classified pixels whose centre lies in each province (only the chunk's tagged ones)."""
        win = rm.grid.chunk_window(cid)
        return [(data != 0) & ~geometry_mask([shapes[p.adcode]], data.shape, rm.grid.window_transform(win))
                if p.adcode in tags.get(cid, ()) else np.zeros(data.shape, bool) for p in provinces]

    return tuple(p.name_en for p in provinces), masks


def draw_sample(rm: RunMap, n: int, strata: str = "none", seed: int = 0) -> Sample:
    """Draw ``n`` pixels of the run (see the module's docstring)."""
    if strata not in SAMPLE_STRATA:
        raise ConfigError(f"--strata {strata!r} is not one of {', '.join(SAMPLE_STRATA)}")
    if n <= 0:
        raise ConfigError(f"--n {n}: give a positive number of points")
    names, masks = _strata_masks(rm, strata)
    chunks = rm.done_chunks
    counts = np.zeros((len(chunks), len(names)), np.int64)
    for i, (cid, data) in enumerate(rm.done_pieces()):
        counts[i] = [int(m.sum()) for m in masks(cid, data)]
    population = counts.sum(0)
    if not population.sum():
        raise InputError(f"{rm.rundir.root} has no classified pixels in done chunks to sample: "
                         "finish the run first")
    drawn = allocate(n, population)
    rng = np.random.default_rng(seed)
    picks: dict[int, list[tuple[int, np.ndarray]]] = {}
    for s in range(len(names)):
        if not drawn[s]:
            continue
        index = np.sort(rng.choice(population[s], size=int(drawn[s]), replace=False))
        starts = np.concatenate([[0], np.cumsum(counts[:, s])])
        where = np.searchsorted(starts, index, side="right") - 1
        for i in np.unique(where):
            picks.setdefault(int(i), []).append((s, index[where == i] - starts[i]))
    rows, cols, stratum = [], [], []
    for i in sorted(picks):
        cid = chunks[i]
        win = rm.grid.chunk_window(cid)
        chunk_masks = masks(cid, stores.read_window(rm.classes, win))
        for s, local in picks[i]:
            flat = np.flatnonzero(chunk_masks[s].ravel())[local]
            rows.append(win.row0 + flat // win.width)
            cols.append(win.col0 + flat % win.width)
            stratum.append(np.full(len(local), s))
    return Sample(_joined(rows), _joined(cols), _joined(stratum), names, population, drawn, seed)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """Pieces of an index array as one (empty when there are none)."""
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def write_sample(path: Path, sample: Sample, rm: RunMap) -> tuple[Path, Path]:
    """Write the points as GeoPackage (``.gpkg``, lon/lat) or CSV, with an empty ``label`` column.

    Columns: ``id``, ``lon``, ``lat``, ``x``, ``y`` (grid CRS: the pixel's
    centre), ``label``.  The design (seed, strata, population, points drawn)
    goes beside it as ``<name>.json``; the map's class is not written, so the
    interpretation stays blind.
    """
    suffix = path.suffix.lower()
    if suffix not in (".gpkg", ".csv"):
        raise ConfigError(f"sample file {path}: give a .gpkg or .csv name")
    x, y = rm.grid.transform @ (sample.cols + 0.5, sample.rows + 0.5)
    lon, lat = Transformer.from_crs(rm.grid.crs, LONLAT, always_xy=True).transform(x, y)
    n = len(sample.rows)
    ids = list(range(1, n + 1))
    result_files.results_folder(path.parent)
    if suffix == ".gpkg":
        gpkg.write_points(path, np.asarray(lon), np.asarray(lat),
                          {"id": ids, "lon": np.asarray(lon).tolist(), "lat": np.asarray(lat).tolist(),
                           "x": np.asarray(x).tolist(), "y": np.asarray(y).tolist(), "label": [""] * n})
    else:  # text at 1e-8 degrees (1 mm) and 1 mm: a point stays inside its pixel
        result_files.write_csv(path, ("id", "lon", "lat", "x", "y", "label"),
                         ([i, f"{a:.8f}", f"{b:.8f}", f"{c:.3f}", f"{d:.3f}", ""]
                          for i, a, b, c, d in zip(ids, *map(np.ravel, (lon, lat, x, y)), strict=True)))
    design = path.with_suffix(".json")
    result_files.write_json(design, {**sample.design(), "grid_crs": rm.grid.crs, "points": str(path)})
    return path, design
