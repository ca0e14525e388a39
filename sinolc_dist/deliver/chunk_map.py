"""A run's chunks as a GeoTIFF: one pixel per chunk, on the grid, for QGIS (``status/chunks.tif``).

:class:`ChunkLattice` holds one value per chunk over the bounding box of a
run's chunk indices: its state code (the driver's live states ``running`` and
``retried`` beside the recorded ones), seconds and attempts.  Pixel ``(i, j)``
is chunk ``c/(row0 + i)/(col0 + j)``; the transform is the grid's scaled by
the chunk side, so each pixel covers its chunk exactly (the last row and column
may reach past the grid's edge, as the chunk lattice does).

:func:`write_chunk_map` writes three bands: 1 the state (with a colour table),
2 the seconds the chunk took (whole seconds, rounded up; 0 not measured), 3
the attempts.  All three are UInt16 because a GeoTIFF's bands share one data
type and one nodata value, and a colour table needs Byte or UInt16: 0 is the
nodata of every band (no chunk, never timed, never tried).  The file is
written beside its destination and renamed into place, so a QGIS that holds
the old one keeps reading it and the next refresh shows the new one.  The
whole country (574,357 chunks, a 1392 × 1216 lattice) is written in a fraction
of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError

from sinolc_dist.errors import InputError
from sinolc_dist.files import atomic_write, replacing
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, StateReader

#: The driver's own states, known only while it runs (the state records the four others).
RUNNING, RETRIED = "running", "retried"
#: Band 1's value of each state; 0 is no chunk of the run (nodata).
STATE_CODES = {PENDING: 1, RUNNING: 2, DONE: 3, FAILED: 4, RETRIED: 5, NO_IMAGERY: 6}
#: Each state's colour (the status PNG's four, blue for running, orange for retried).
STATE_COLOURS = {PENDING: "#c8c8c8", RUNNING: "#1f77b4", DONE: "#5cb85c", FAILED: "#d62728",
                 RETRIED: "#ff9f1c", NO_IMAGERY: "#9467bd"}
BANDS = ("state (1 pending, 2 running, 3 done, 4 failed, 5 retried, 6 no-imagery)",
         "seconds per chunk (whole seconds, rounded up; 0 not measured)", "attempts")
MAX_U16 = np.iinfo(np.uint16).max


def chunk_map_path(rundir: RunDir, stage: str = "run") -> Path:
    """Where a stage's chunk map goes: ``status/chunks.tif`` for a run, ``status/<stage>-chunks.tif``."""
    return rundir.root / "status" / ("chunks.tif" if stage == "run" else f"{stage}-chunks.tif")


def status_maps(run_dir: Path, path: Path, driver_alive: bool) -> list[Path]:
    """``status --map``: the map ``path`` asks for, and ``status/chunks.tif`` refreshed; the files written.

    ``.tif``/``.tiff`` is this module's GeoTIFF, anything else the PNG of
    :func:`~sinolc_dist.deliver.maps.status_map`.  Both read the state without
    changing it.  ``status/chunks.tif`` is rewritten from the state only when no
    driver runs (``driver_alive`` false): a running driver refreshes it itself,
    with the ``running`` and ``retried`` chunks that the state does not record.
    """
    rundir = RunDir(Path(run_dir))
    grid = rundir.read_config().grid
    if not rundir.state.is_file():  # opening a missing state would create it
        raise InputError(f"run {rundir.root} has no planned chunks to draw: plan it first "
                         "(`sinolc-dist plan` or `sinolc-dist run`)")
    path, written = Path(path), []
    if path.suffix.lower() in (".tif", ".tiff"):
        written.append(write_chunk_map(ChunkLattice.from_state(rundir.state, grid), path))
    else:
        from sinolc_dist.deliver.maps import status_map  # matplotlib only for a PNG

        written.append(status_map(rundir.root, path))
    live = chunk_map_path(rundir)
    if not driver_alive and live.resolve() != path.resolve():
        live.parent.mkdir(exist_ok=True)
        written.append(write_chunk_map(ChunkLattice.from_state(rundir.state, grid), live))
    return written


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@dataclass
class ChunkLattice:
    """Per-chunk arrays over the bounding box of a run's chunks (see the module docstring).

    ``groups`` are the distinct sets of provinces (adcodes) chunks lie in and
    ``group`` each cell's index into them (-1: no chunk); ``provinces`` maps
    each adcode to the flat indices of its cells.
    """

    grid: Grid
    row0: int
    col0: int
    state: np.ndarray
    seconds: np.ndarray
    attempts: np.ndarray
    groups: tuple[tuple[str, ...], ...] = ()
    group: np.ndarray | None = None
    provinces: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state_path: Path, grid: Grid) -> ChunkLattice:
        """The lattice of a state file, read-only (safe while a driver writes it).

        SQLite translates the statuses and groups the chunks by provinces
        (:class:`~sinolc_dist.rundir.state.StateReader`), so a national state is
        read in about two seconds.
        """
        with StateReader(state_path) as reader:
            return cls._read(reader, grid, state_path)

    @classmethod
    def _read(cls, reader: StateReader, grid: Grid, state_path: Path) -> ChunkLattice:
        """Read the lattice through an open reader (see :meth:`from_state`)."""
        rows = reader.lattice_rows(STATE_CODES)
        if not rows:
            raise InputError(f"the state {state_path} has no planned chunks to map: plan the run first "
                             "(`sinolc-dist plan` or `sinolc-dist run`)")
        table = np.array(rows, np.float64)
        rr, cc = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
        row0, col0 = int(rr.min()), int(cc.min())
        shape = (int(rr.max()) - row0 + 1, int(cc.max()) - col0 + 1)
        flat = (rr - row0) * shape[1] + (cc - col0)
        lattice = cls(grid, row0, col0, np.zeros(shape, np.uint8), np.zeros(shape, np.float32),
                      np.zeros(shape, np.uint16), group=np.full(shape, -1, np.int32))
        lattice.state.flat[flat] = table[:, 2]
        lattice.seconds.flat[flat] = table[:, 4]
        lattice.attempts.flat[flat] = np.minimum(table[:, 3], MAX_U16)
        groups, members = [], {}
        for i, (provs, cells) in enumerate(reader.province_cells(row0, col0, shape[1])):
            index = np.array(cells, np.int64)
            lattice.group.flat[index] = i
            groups.append(provs)
            for code in groups[-1]:
                members.setdefault(code, []).append(index)
        lattice.groups = tuple(groups)
        lattice.provinces = {code: np.sort(np.concatenate(ix)) for code, ix in members.items()}
        return lattice

    def provinces_at(self, cell: int) -> tuple[str, ...]:
        """The provinces of the chunk in flat cell ``cell`` (none where there is no chunk)."""
        g = -1 if self.group is None else int(self.group.flat[cell])
        return self.groups[g] if g >= 0 else ()

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the lattice."""
        return self.state.shape

    @property
    def transform(self) -> Affine:
        """Pixel ``(j, i)`` → the top-left corner of chunk ``(row0 + i, col0 + j)`` in the grid's CRS."""
        step = self.grid.chunk
        return self.grid.transform @ Affine.translation(self.col0 * step, self.row0 * step) @ \
            Affine.scale(step)

    def index(self, cid: ChunkId) -> tuple[int, int] | None:
        """The lattice cell of a chunk, ``None`` when it lies outside the lattice."""
        i, j = cid.row - self.row0, cid.col - self.col0
        return (i, j) if 0 <= i < self.shape[0] and 0 <= j < self.shape[1] else None

    def counts(self) -> dict[str, int]:
        """Chunks per state (every state present)."""
        n = np.bincount(self.state.ravel(), minlength=len(STATE_CODES) + 1)
        return {s: int(n[code]) for s, code in STATE_CODES.items()}


def write_chunk_map(lattice: ChunkLattice, path: Path) -> Path:
    """Write the lattice as a three-band GeoTIFF (see the module docstring), atomically; returns ``path``.

    The colour table lies in GDAL's side file ``<path>.aux.xml`` (a TIFF holds
    one only in a one-band file); it never changes, so it is written once.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write the chunk map {path}: folder {path.parent} does not exist; "
                         "create it or give another path")
    bands = np.stack([lattice.state.astype(np.uint16),
                      np.minimum(np.ceil(lattice.seconds), MAX_U16).astype(np.uint16),
                      lattice.attempts])
    height, width = lattice.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint16",
               "crs": lattice.grid.pyproj_crs.to_wkt(), "transform": lattice.transform, "nodata": 0,
               "compress": "deflate", "zlevel": 1, "tiled": True, "blockxsize": 256, "blockysize": 256}
    side = path.with_name(path.name + ".aux.xml")
    try:
        if not side.is_file() or side.read_text(encoding="utf-8") != _PAM:
            atomic_write(side, lambda f: f.write(_PAM))
        with replacing(path, ".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(bands)
            for band, text in enumerate(BANDS, start=1):
                dst.set_band_description(band, text)
            dst.update_tags(chunk=str(lattice.grid.chunk), row0=str(lattice.row0), col0=str(lattice.col0))
    except (OSError, RasterioError) as exc:
        raise InputError(f"cannot write the chunk map {path}: {exc}; free space on its file system or "
                         "make it writable, then run the same command again") from None
    return path


def _pam() -> str:
    """GDAL's side file for band 1: palette interpretation and the states' colour table."""
    colours = {code: _rgb(STATE_COLOURS[s]) for s, code in STATE_CODES.items()}
    entries = "".join(
        '      <Entry c1="{}" c2="{}" c3="{}" c4="{}"/>\n'.format(*colours.get(v, (0, 0, 0)),
                                                            255 if v in colours else 0)
        for v in range(max(colours) + 1))
    return ("<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <ColorInterp>Palette</ColorInterp>\n"
            f"    <ColorTable>\n{entries}    </ColorTable>\n  </PAMRasterBand>\n</PAMDataset>\n")


_PAM = _pam()
