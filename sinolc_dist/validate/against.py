"""``validate --against MAP.tif``: agreement with another classified raster, per province and class.

The other map may have any CRS and resolution.  By default (``mode``) our map
is resampled by majority onto *its* grid, block by block of the other map
(GDAL's mode resampling over our done chunks; pixels of chunks not done count
as no data); with ``nearest`` the other map is warped by nearest neighbour onto
*our* grid, chunk by chunk of the done chunks.  Either way one block of each is
in memory at a time.  The other map's codes go through ``--class-map`` (their
code → ours); a code it leaves unmapped (or absent from our legend) is counted
as ``unknown class``; no-data pixels on either side (theirs: its no-data value,
else 0) are counted too, never compared.

Results: the confusion matrix in pixels (OA, kappa, per-class accuracies) and
in km² (equal-area pixel areas of the target grid), per province (pixel centre
in the polygon) and national, and an agreement map on the target grid as a
COG: 1 agree, 2 disagree, 0 not compared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window as RioWindow
from shapely.geometry.base import BaseGeometry

from sinolc_dist.deliver.stats import PixelAreas
from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import Grid, Window
from sinolc_dist.legend import NODATA, Legend
from sinolc_dist.regions.region import to_crs
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE
from sinolc_dist.validate import result_files
from sinolc_dist.validate.agreement import AgreementWriter
from sinolc_dist.validate.metrics import Accuracy, accuracy, confusion
from sinolc_dist.validate.pointfile import load_class_map
from sinolc_dist.validate.points import NATIONAL, scope_name
from sinolc_dist.validate.runmap import STATUS_CODE, RunMap

RESAMPLE = ("mode", "nearest")
#: Why target pixels were not compared, as counted in :attr:`AgainstResult.skipped_px`.
SKIPPED = ("their nodata", "map nodata or chunk not done", "unknown class")
#: Side of the other map's blocks in ``mode``, bounded so our matching window stays near 4096² px.
_OUR_BLOCK_PX = 4096


@dataclass(frozen=True)
class Block:
    """One piece of the target grid: both maps on it and where it lies."""

    ours: np.ndarray
    theirs: np.ndarray
    window: Window


@dataclass(frozen=True)
class AgainstResult:
    """What ``validate --against`` found: pixel and km² matrices per scope, pixels not compared."""

    source: str
    resample: str
    codes: tuple[int, ...]
    scopes: dict[str, Accuracy]
    km2: dict[str, np.ndarray]
    skipped_px: dict[str, int]
    agreement: Path


def _target_grid(src: rasterio.DatasetReader, path: Path) -> Grid:
    """The other map's grid as a :class:`Grid` (square, north-up pixels), for its pixel areas."""
    t = src.transform
    if t.b or t.d or abs(abs(t.a) - abs(t.e)) > 1e-9 * abs(t.a) or t.e > 0:
        raise InputError(f"map {path} has rotated or non-square pixels: use --resample nearest (our grid)")
    return Grid(crs=src.crs.to_wkt(), resolution=t.a, origin=(t.c, t.f), size=(src.height, src.width),
                chunk=256, block=256, shard=1, halo=0)


def _mask_not_done(rm: RunMap, window: Window, data: np.ndarray) -> np.ndarray:
    """``data`` over ``window`` with the pixels of chunks not done set to no data."""
    for cid in rm.grid.chunks_in(window):
        if rm.status[cid.row, cid.col] != STATUS_CODE[DONE]:
            data[rm.grid.chunk_window(cid).intersect(window).within(window)] = NODATA
    return data


def _any_done(rm: RunMap, window: Window) -> bool:
    """Whether a done chunk meets the window (an empty or off-grid window meets none)."""
    if window.height <= 0 or window.width <= 0:
        return False
    c = rm.grid.chunk
    rows = slice(window.row0 // c, (window.row1 - 1) // c + 1)
    cols = slice(window.col0 // c, (window.col1 - 1) // c + 1)
    return bool((rm.status[rows, cols] == STATUS_CODE[DONE]).any())


def _done_window(rm: RunMap) -> Window:
    """The window holding every done chunk."""
    rows, cols = np.nonzero(rm.status == STATUS_CODE[DONE])
    if not len(rows):
        raise InputError(f"{rm.rundir.root} has no done chunks to compare: finish the run first")
    c = rm.grid.chunk
    return Window(int(rows.min()) * c, int(cols.min()) * c, int(rows.max() + 1) * c,
                  int(cols.max() + 1) * c).intersect(rm.grid.full_window)


@dataclass(frozen=True)
class BlockJob:
    """What reading one block takes: the run (and its state's version), the other map, how and where.

    Small and picklable: a task on the run's cluster gets one and returns a :class:`Block`.
    """

    run_dir: Path
    state_stamp: int
    map_path: Path
    resample: str
    window: Window


#: Maps :func:`read_block` over the jobs, yielding blocks in any order (``map``: in this process).
Runner = Callable[[Callable[[BlockJob], Block], list[BlockJob]], Iterable[Block]]


def state_stamp(rundir: RunDir) -> int:
    """A version of the run's state (newest write to ``state.sqlite`` or its WAL), to key cached maps by."""
    files = (rundir.state, rundir.state.with_name(rundir.state.name + "-wal"))
    return max(f.stat().st_mtime_ns for f in files if f.exists())


@functools.lru_cache(maxsize=4)
def _cached_run(run_dir: str, stamp: int) -> RunMap:
    """The run opened once per process and state version (a worker serves many blocks)."""
    return RunMap.open(RunDir(Path(run_dir)))


def _block_windows(rm: RunMap, target: Grid, extent: Window, resample: str) -> list[Window]:
    """The blocks of the target grid: our done chunks (``nearest``), or tiles of the extent (``mode``).

    A ``mode`` tile's side keeps our matching window near 4096² px.
    """
    if resample == "nearest":
        return [rm.grid.chunk_window(c) for c in rm.done_chunks]
    side = max(64, int(_OUR_BLOCK_PX * rm.grid.nominal_pixel_m / max(target.nominal_pixel_m, 1e-9)))
    return [Window(r0, c0, min(r0 + side, extent.row1), min(c0 + side, extent.col1))
            for r0 in range(extent.row0, extent.row1, side) for c0 in range(extent.col0, extent.col1, side)]


def read_block(job: BlockJob) -> Block:
    """Both maps over one block of the target grid: ours by mode onto theirs, or theirs by nearest onto ours.

    Runs wherever the runner puts it (a cluster worker opens the run once per state version).
    """
    rm = _cached_run(str(job.run_dir), job.state_stamp)
    win = job.window
    with rasterio.open(job.map_path) as src:
        if job.resample == "nearest":
            height, width = rm.grid.size
            with WarpedVRT(src, crs=rm.grid.crs, transform=rm.grid.transform, width=width, height=height,
                           resampling=Resampling.nearest, nodata=_their_nodata(src)) as vrt:
                theirs = vrt.read(1, window=RioWindow(win.col0, win.row0, win.width, win.height))
            ours = _mask_not_done(rm, win, stores.read_window(rm.classes, win))
            return Block(ours, theirs, win)
        target = _target_grid(src, job.map_path)
        footprint = transform_bounds(src.crs, rm.grid.crs, *target.window_bounds(win), densify_pts=21)
        ours_win = rm.grid.bounds_window(*footprint).grow(1).intersect(rm.grid.full_window)
        on_theirs = np.zeros((win.height, win.width), np.uint8)
        if _any_done(rm, ours_win):  # else all no data on our side: nothing to read
            ours = _mask_not_done(rm, ours_win, stores.read_window(rm.classes, ours_win))
            reproject(ours, on_theirs, src_transform=rm.grid.window_transform(ours_win),
                      src_crs=rm.grid.crs, dst_transform=target.window_transform(win), dst_crs=src.crs,
                      src_nodata=NODATA, dst_nodata=NODATA, resampling=Resampling.mode)
        return Block(on_theirs, src.read(1, window=RioWindow(win.col0, win.row0, win.width, win.height)), win)


@dataclass
class _Tally:
    """Running sums over the blocks (pixel areas are computed only where pixels are compared)."""

    areas: PixelAreas
    codes: tuple[int, ...]
    pixels: dict[str, np.ndarray]
    km2: dict[str, np.ndarray]
    skipped: dict[str, int]

    def add(self, scope: str, ours: np.ndarray, theirs: np.ndarray, km2: np.ndarray) -> None:
        """Add compared pixels (and their km²) to a scope's matrices."""
        k = len(self.codes)
        self.pixels.setdefault(scope, np.zeros((k, k)))
        self.km2.setdefault(scope, np.zeros((k, k)))
        self.pixels[scope] += confusion(ours, theirs, self.codes)
        self.km2[scope] += confusion(ours, theirs, self.codes, km2)

    def add_block(self, block: Block, theirs: np.ndarray, their_nodata: np.ndarray,
                  provinces: Callable[[], np.ndarray], scopes: list[str]) -> np.ndarray:
        """Count a block (``theirs`` already in our codes, 0 where unknown); returns its agreement.

        ``provinces()`` gives the block's province index (1-based into ``scopes``, 0 outside).
        """
        ours = block.ours
        valid = (ours != NODATA) & (theirs != NODATA)
        self.skipped["their nodata"] += int(their_nodata.sum())
        self.skipped["map nodata or chunk not done"] += int(((ours == NODATA) & ~their_nodata).sum())
        self.skipped["unknown class"] += int(((theirs == NODATA) & ~their_nodata & (ours != NODATA)).sum())
        if not valid.any():
            return np.zeros(ours.shape, np.uint8)
        km2 = self.areas.pixels_km2(block.window)
        self.add(NATIONAL, ours[valid], theirs[valid], km2[valid])
        province = provinces()
        for i in np.unique(province[valid]):
            if i:
                here = valid & (province == i)
                self.add(scopes[i - 1], ours[here], theirs[here], km2[here])
        return np.where(valid, np.where(ours == theirs, 1, 2), 0).astype(np.uint8)


def _code_table(class_map: dict[str, int], codes: tuple[int, ...], path: str) -> np.ndarray:
    """Their raster code (0..255) → our code (0: unknown): the class map, else our own codes."""
    table = np.zeros(256, np.uint8)
    if not class_map:
        table[list(codes)] = codes
        return table
    for key, ours in class_map.items():
        if not key.isdigit() or int(key) > 255:
            raise ConfigError(f"class map {path}: {key!r} is not a raster code (0..255) of the other map")
        table[int(key)] = ours
    return table


def _their_nodata(src: rasterio.DatasetReader) -> float:
    """The other map's no-data value: its own, else 0 (as in most class maps, ours included)."""
    return src.nodata if src.nodata is not None else 0


def _their_codes(raw: np.ndarray, nodata: float, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The other map's pixels in our codes (0 unknown) and its own no-data mask."""
    their_nodata = raw == nodata
    inside = (raw >= 0) & (raw < 256) & ~their_nodata
    return np.where(inside, table[np.where(inside, raw, 0).astype(np.int64)], NODATA), their_nodata


def _extent(rm: RunMap, src: rasterio.DatasetReader, target: Grid, resample: str) -> Window:
    """Where the comparison happens on the target grid: the done chunks, or their footprint there."""
    done = _done_window(rm)
    if resample == "nearest":
        return done
    bounds = transform_bounds(rm.grid.crs, src.crs, *rm.grid.window_bounds(done), densify_pts=21)
    overlap = target.bounds_window(*bounds)
    if overlap.height <= 0 or overlap.width <= 0:
        raise InputError(f"map {src.name} does not overlap the run's done chunks: check its extent and CRS")
    return overlap


def _province_index(shapes: list[tuple[BaseGeometry, int]], target: Grid, window: Window) -> np.ndarray:
    """Each pixel's province (1-based index of ``shapes``; 0 outside them), by its centre."""
    if not shapes:
        return np.zeros((window.height, window.width), np.uint8)
    return rasterize(shapes, (window.height, window.width), fill=0, transform=target.window_transform(window),
                     dtype="uint8")




def cluster_runner(client: Any, in_flight: int) -> Runner:
    """A :data:`Runner` on a Dask cluster: at most ``in_flight`` blocks at a time, yielded as they finish.

    Bounds the driver's memory (each finished block is counted and written, then dropped).
    """
    from distributed import as_completed

    def run(read: Callable[[BlockJob], Block], jobs: list[BlockJob]) -> Iterator[Block]:
        todo = iter(jobs)
        running = as_completed([client.submit(read, job, pure=False) for job in islice(todo, in_flight)])
        for future in running:
            block = future.result()
            if (job := next(todo, None)) is not None:
                running.add(client.submit(read, job, pure=False))
            yield block

    return run


def validate_against(rundir: RunDir, path: str | Path, folder: Path, class_map: str | Path | None = None,
                     resample: str = "mode", runner: Runner = map) -> AgainstResult:
    """Compare the run with another classified raster (see the module's docstring).

    The agreement map is written to ``folder/agreement.tif``.  ``runner`` reads
    the blocks (:func:`read_block`): in this process by default, on the run's
    cluster with the CLI's ``--cluster``; the counts and the agreement map stay
    here (one writer).
    """
    if resample not in RESAMPLE:
        raise ConfigError(f"--resample {resample!r} is not one of {', '.join(RESAMPLE)}")
    RunMap.open(rundir)  # refuses a folder that is no run before the state is stamped
    stamp = state_stamp(rundir)
    rm = _cached_run(str(rundir.root), stamp)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"map {path} not found: check the path")
    codes = rm.legend.codes
    table = _code_table(load_class_map(class_map, rm.legend), codes, str(class_map))
    try:
        src = rasterio.open(path)
    except rasterio.RasterioIOError as exc:
        raise InputError(f"map {path} is not a raster GDAL reads ({exc}): give a GeoTIFF") from None
    with src:
        if src.crs is None:
            raise InputError(f"map {path} has no CRS: georeference it (gdal_edit.py -a_srs) first")
        target = rm.grid if resample == "nearest" else _target_grid(src, path)
        extent = _extent(rm, src, target, resample)
        provinces = rm.provinces
        shapes = [(to_crs(rm.geometries[p.adcode], target.crs), i + 1) for i, p in enumerate(provinces)]
        tally = _Tally(PixelAreas(target), codes, {}, {}, dict.fromkeys(SKIPPED, 0))
        jobs = [BlockJob(rundir.root, stamp, path, resample, w)
                for w in _block_windows(rm, target, extent, resample)]
        agreement = folder / "agreement.tif"
        with AgreementWriter(agreement, target, extent) as out:
            for block in runner(read_block, jobs):
                theirs, their_nodata = _their_codes(block.theirs, _their_nodata(src), table)
                index = partial(_province_index, shapes, target, block.window)
                out.write(block.window, tally.add_block(block, theirs, their_nodata, index,
                                                        [p.adcode for p in provinces]))
    scopes = {s: accuracy(m, codes) for s, m in tally.pixels.items()} or {NATIONAL: accuracy(
        np.zeros((len(codes), len(codes))), codes)}
    return AgainstResult(str(path), resample, codes, scopes, tally.km2, tally.skipped, agreement)


def write_against_results(folder: Path, result: AgainstResult, legend: Legend) -> list[Path]:
    """Write the comparison's tables and JSON report beside the agreement map.

    ``accuracy.csv``, ``classes.csv``, ``confusion.csv``/``.png`` (pixels),
    ``crosstab_km2.csv`` (non-zero cells per scope) and ``report.json``.
    """
    result_files.results_folder(folder)
    names = {s: scope_name(s) for s in result.scopes}
    cells = [[scope, names.get(scope, scope), c, legend.name_of(c), t, legend.name_of(t), m[i, j]]
             for scope, m in result.km2.items() for i, c in enumerate(result.codes)
             for j, t in enumerate(result.codes) if m[i, j]]
    paths = [result_files.write_csv(folder / "accuracy.csv", result_files.ACCURACY_HEADER,
                              result_files.accuracy_rows(result.scopes, names)),
             result_files.write_csv(folder / "classes.csv", result_files.CLASS_HEADER,
                              result_files.class_rows(result.scopes, legend)),
             *result_files.write_confusion(folder, result.scopes[NATIONAL], legend, unit="pixels"),
             result_files.write_csv(folder / "crosstab_km2.csv", ("scope", "name", "map_code", "map_class",
                                                            "other_code", "other_class", "km2"), cells)]
    class_names = legend.class_names()
    doc = {"against": result.source, "resample": result.resample, "agreement_map": str(result.agreement),
           "skipped_pixels": result.skipped_px, "unit": "pixels of the target grid; km2 in km2",
           "scopes": {s: {"name": names[s], **a.to_dict(class_names),
                          "km2": result.km2.get(s, np.zeros((0, 0))).tolist()}
                      for s, a in result.scopes.items()}}
    paths.append(result_files.write_json(folder / "report.json", doc))
    return [result.agreement, *paths]
