"""A real run directory without inference: a small grid in Hubei, a known class map, chunk states."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pyproj import Transformer

from sinolc_dist.grid import CHINA_ALBERS, LONLAT, ChunkId, Grid
from sinolc_dist.legend import SINOLC, Legend
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import ChunkResult, StateStore

HUBEI = "420000"
#: Chunks that are not done: pending, failed, without imagery; CHUNKS - those - UNPLANNED are done.
PENDING, FAILED, NO_IMAGERY, UNPLANNED = ChunkId(0, 0), ChunkId(0, 1), ChunkId(0, 2), ChunkId(3, 3)


def hubei_grid() -> Grid:
    """A 256×256 px, 2 m Albers grid north-west of Wuhan: 4×4 chunks of 64 px, all in Hubei."""
    x, y = Transformer.from_crs(LONLAT, CHINA_ALBERS, always_xy=True).transform(113.70, 30.95)
    return Grid(crs=CHINA_ALBERS, resolution=2.0, origin=(round(x), round(y)), size=(256, 256),
                chunk=64, block=32, shard=2, halo=0)


def truth_classes(size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """The map's classes: 8×8 px blocks cycling through codes 1..5 (SinoLC codes), no nodata."""
    rows, cols = np.indices(size)
    return (1 + (rows // 8 + 2 * (cols // 8)) % 5).astype(np.uint8)


@dataclass(frozen=True)
class FakeRun:
    """A run directory, its grid and the classes its output store holds."""

    rundir: RunDir
    grid: Grid
    classes: np.ndarray

    def pixel_xy(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid CRS coordinates of pixel centres."""
        return self.grid.transform @ (np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)

    def pixel_lonlat(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat of pixel centres."""
        x, y = self.pixel_xy(rows, cols)
        lon, lat = Transformer.from_crs(CHINA_ALBERS, LONLAT, always_xy=True).transform(x, y)
        return np.asarray(lon), np.asarray(lat)


def make_run(root: Path, nodata_px: int = 0, legend: Legend = SINOLC) -> FakeRun:
    """Write run.json, state.sqlite (chunk states above) and output.zarr for :func:`hubei_grid`.

    ``nodata_px``: the first pixels of chunk c/1/1's first row set to 0.
    """
    grid = hubei_grid()
    rundir = RunDir(root).create()
    rundir.freeze(RunConfig(grid=grid, region="Hubei", legend=legend), frozenset())
    classes = truth_classes(grid.size)
    classes[64, 64:64 + nodata_px] = 0
    arr = stores.create_store(rundir.output, grid, "output")
    stores.write_window(arr, grid.full_window, classes)
    planned = [c for c in grid.chunks_in(grid.full_window) if c != UNPLANNED]
    with StateStore(rundir.state) as state:
        state.add_chunks((c, (HUBEI,)) for c in planned)
        done = [c for c in planned if c not in (PENDING, FAILED, NO_IMAGERY)]
        state.record([ChunkResult(c, ok=True) for c in done] + [ChunkResult(FAILED, ok=False, error="boom")])
        state.mark_no_imagery([NO_IMAGERY])
    return FakeRun(rundir, grid, classes)


@pytest.fixture
def fake_run(tmp_path: Path) -> FakeRun:
    """A small finished-in-part run (12 of 16 chunks done) in Hubei."""
    return make_run(tmp_path / "run", nodata_px=4)
