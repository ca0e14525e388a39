"""A finished (or partly finished) run seen as a map: its classes, which chunks are done, its provinces.

Validation reads the run directory only: ``run.json`` (grid, legend,
boundaries), ``state.sqlite`` (which chunks are done: a pixel of a chunk not
done is never compared, it may hold an old or partial result), the output
store, and the province polygons of its boundaries.  Results go under
``<run-dir>/validation/``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
import zarr
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from sinolc_dist.deliver.stats import CODES, PixelAreas, class_km2
from sinolc_dist.errors import InputError
from sinolc_dist.grid import LONLAT, ChunkId, Grid
from sinolc_dist.legend import Legend
from sinolc_dist.regions.provinces import PROVINCES, Province
from sinolc_dist.regions.region import province_geometries
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, STATUSES, StateStore

#: Chunk status codes in :attr:`RunMap.status`: 0 is a chunk the run did not plan.
OUTSIDE = 0
STATUS_CODE = {s: i + 1 for i, s in enumerate(STATUSES)}


def validation_folder(rundir: RunDir) -> Path:
    """Where validation results go: ``<run-dir>/validation/`` (created on first write)."""
    return rundir.root / "validation"


@dataclass(frozen=True)
class RunMap:
    """The run's grid, legend, output classes, per-chunk status and the provinces its chunks touch.

    ``status`` holds every chunk's status code (:data:`STATUS_CODE`; ``OUTSIDE``
    where the run planned none): 1 byte a chunk, 1.7 MB for the national grid.
    The chunks' province tags stay in the state and are asked for the chunks
    that need them.
    """

    rundir: RunDir
    config: RunConfig
    classes: zarr.Array
    status: np.ndarray
    adcodes: tuple[str, ...]

    @classmethod
    def open(cls, rundir: RunDir) -> RunMap:
        """Open a run directory for validation (its state and output store must exist)."""
        config = rundir.require().read_config()
        if not rundir.state.is_file():
            raise InputError(f"{rundir.root} has no state.sqlite: run `sinolc-dist run` first")
        grid = config.grid
        status = np.zeros(grid.chunks_shape, np.uint8)
        with StateStore(rundir.state) as state:
            rows, cols, statuses = state.positions()
            adcodes = {a for prov, _, _ in state.status_groups() for a in prov}
        codes = np.array([STATUS_CODE.get(s, OUTSIDE) for s in statuses], np.uint8)
        status[np.asarray(rows, np.int64), np.asarray(cols, np.int64)] = codes
        return cls(rundir, config, stores.open_array(rundir.output, grid), status,
                   tuple(sorted(a for a in adcodes if a in PROVINCES)))

    @property
    def grid(self) -> Grid:
        """The run's grid."""
        return self.config.grid

    @property
    def legend(self) -> Legend:
        """The run's legend (as frozen in run.json)."""
        return self.config.legend

    @property
    def done_chunks(self) -> list[ChunkId]:
        """The chunks whose results are recorded, in (row, col) order."""
        rows, cols = np.nonzero(self.status == STATUS_CODE[DONE])
        return [ChunkId(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]

    @functools.cached_property
    def provinces(self) -> tuple[Province, ...]:
        """The provinces the run's chunks touch, by adcode."""
        return tuple(PROVINCES[a] for a in self.adcodes)

    @functools.cached_property
    def geometries(self) -> dict[str, BaseGeometry]:
        """The provinces' lon/lat polygons (the run's boundaries), prepared for point tests."""
        geoms = province_geometries([p.adcode for p in self.provinces], self.config.boundaries)
        for geom in geoms.values():
            shapely.prepare(geom)
        return geoms

    def chunk_status(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The status code of the chunk of each grid pixel (``OUTSIDE`` off the grid or unplanned)."""
        height, width = self.grid.size
        inside = (rows >= 0) & (cols >= 0) & (rows < height) & (cols < width)
        out = np.zeros(rows.shape, np.uint8)
        c = self.grid.chunk
        out[inside] = self.status[rows[inside] // c, cols[inside] // c]
        return out

    def province_of(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The adcode of each pixel's province (its centre in the polygon), ``""`` outside them all.

        Only the provinces the pixel's chunk is tagged with are tested.
        """
        out = np.full(rows.shape, "", dtype=object)
        if not len(rows):
            return out
        x, y = self.grid.transform @ (cols + 0.5, rows + 0.5)
        lon, lat = Transformer.from_crs(self.grid.crs, LONLAT, always_xy=True).transform(x, y)
        c = self.grid.chunk
        width = self.status.shape[1]
        unique, inverse = np.unique((rows // c) * width + cols // c, return_inverse=True)
        chunks = [ChunkId(int(k) // width, int(k) % width) for k in unique]
        tags = self.chunk_tags(chunks)
        for adcode, geom in self.geometries.items():
            tagged = np.array([adcode in tags.get(cid, ()) for cid in chunks], bool)
            todo = tagged[inverse] & (out == "")
            if todo.any():
                hit = shapely.contains_xy(geom, np.asarray(lon)[todo], np.asarray(lat)[todo])
                out[np.flatnonzero(todo)[hit]] = adcode
        return out

    def chunk_tags(self, chunks: list[ChunkId]) -> dict[ChunkId, tuple[str, ...]]:
        """The provinces (adcodes) the state tags each chunk with."""
        with StateStore(self.rundir.state) as state:
            return state.provinces_of(chunks)

    def read_pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The class codes at grid pixels (in bounds), read in batches of inner blocks only."""
        if not len(rows):
            return np.zeros(0, np.uint8)
        order = np.lexsort((cols, rows))
        values = np.empty(len(rows), np.uint8)
        values[order] = self.classes.get_coordinate_selection((rows[order], cols[order]))
        return values

    def done_pieces(self) -> Iterator[tuple[ChunkId, np.ndarray]]:
        """Each done chunk's classes, one chunk in memory at a time."""
        for cid in self.done_chunks:
            yield cid, stores.read_window(self.classes, self.grid.chunk_window(cid))

    def mapped_km2(self) -> np.ndarray:
        """Area in km² of each code (0..255) over the done chunks, streamed from the store.

        The population a sample from :mod:`~sinolc_dist.validate.sample` is drawn
        from (whole done chunks, also beyond a province's border), so its strata
        weights; the mosaic's statistics clip to the provinces and would not match.
        """
        areas = PixelAreas(self.grid)
        total = np.zeros(CODES)
        for cid, data in self.done_pieces():
            total += class_km2(areas, self.grid.chunk_window(cid), data, self.legend.codes)
        return total
