"""A provincial COG written by many workers: the same file as :func:`~sinolc_dist.deliver.cog.write_cog`.

:func:`submit_cog` cuts the window into aligned blocks (one task each, none for
a block outside the province polygon), adds rounds of tasks that make the
higher overview levels from the blocks' top levels (:mod:`sinolc_dist.deliver.blocks`),
and one assembly task, and returns at once with a :class:`CogFuture`.

The assembly is sequential and cheap (it reads and writes the file's bytes
once): GDAL's COG driver copies an empty stage of the whole window, made by
:func:`~sinolc_dist.deliver.cog.make_cog` with exactly :func:`write_cog`'s
profile, tags, class areas and options, through a hollow VRT (no pixel source:
:meth:`~sinolc_dist.deliver.pyramid.Pyramid.vrt`, about 1 s per 1e10 px of
window), so the header, every IFD, the colour table, the geokeys and the ghost
header are GDAL's own and every tile is empty.  The assembly then
computes where each tile goes in GDAL's COG order (smallest overview first,
each level row by row, each tile behind a 4-byte size and followed by its last
4 bytes, as the ghost header declares), patches the tile arrays of every IFD
(:mod:`sinolc_dist.deliver.tiff`), appends the tiles from the parts while
hashing the file (SHA-256), validates the COG and only then renames it into
place (:func:`sinolc_dist.files.replacing`).  The blocks' tiles were compressed
by GDAL with the COG driver's codec and options, so the file is byte for byte
the one :func:`write_cog` writes on an equal-area grid (pixel for pixel elsewhere:
the class areas' last digits may differ).

A kill at any point leaves nothing under the final name; the parts folder is
removed by the assembly whatever happens, and by the next attempt at the same file.
"""

from __future__ import annotations

import glob
import hashlib
import io
import shutil
import struct
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from shapely.geometry.base import BaseGeometry

from sinolc_dist.deliver.blocks import CogPlan, Made, Refused, block_task, group_task
from sinolc_dist.deliver.cog import CogReport, cog_options, dataset_tags, make_cog, overlap, validated
from sinolc_dist.deliver.staging import AreaSum, outside, polygonal
from sinolc_dist.deliver.stats import as_table
from sinolc_dist.deliver.tiff import Ifd, read_ifds
from sinolc_dist.errors import ConfigError, InputError, SinolcError
from sinolc_dist.files import make_folders, replacing, writable_folder
from sinolc_dist.gdal_errors import caught_gdal_errors, write_failure
from sinolc_dist.grid import Grid, Window
from sinolc_dist.legend import SINOLC, Legend
from sinolc_dist.rundir.stores import open_array

if TYPE_CHECKING:
    from distributed import Client, Future

#: Levels a round of tasks makes, as a factor: a round-1 block is ``tile * STEP`` px square.
STEP = 16
#: Part files the assembly keeps open at once.
_OPEN_PARTS = 256


class CogFuture:
    """A COG being written by many tasks: finished yet, and its report (raising the write's error)."""

    def __init__(self, final: Future, futures: dict[str, Future], shared: Future | None = None) -> None:
        self._final, self.futures = final, futures
        self._shared = shared  # the plan on the cluster, held while the tasks run

    @property
    def keys(self) -> list[str]:
        """The task keys of this COG (blocks, rounds, then the assembly)."""
        return list(self.futures)

    def done(self) -> bool:
        """Whether the assembly has ended."""
        return bool(self._final.done())

    def result(self, timeout: float | None = None) -> CogReport:
        """The COG's report; an expected failure of any of its tasks is raised here as its error."""
        value = self._final.result(timeout=timeout)
        if isinstance(value, Refused):
            raise value.kind(value.message)
        return value


def submit_cog(
    client: Client, dst: Path, grid: Grid, output_store_path: Path, window: Window,
    mask: BaseGeometry | None, tags: dict[str, str] | None = None, legend: Legend = SINOLC,
    key_prefix: str = "cog", block_px: int | None = None,
) -> CogFuture:
    """Write a window of the output store as one COG with many tasks on ``client``; returns at once.

    The file is :func:`~sinolc_dist.deliver.cog.write_cog`'s for the same
    window, mask, tags and legend, on the grid's CRS.  Every task has priority
    10 (ahead of queued inference); keys start with ``key_prefix`` and a short
    uuid of this attempt, so a province submitted again never meets a forgotten one.

    Args:
        client: The cluster's client.
        dst: Final path; replaced atomically, and only by a valid COG.
        grid: The output store's grid.
        output_store_path: The output Zarr store (read by the workers).
        window: Grid pixel window to write; clipped to the grid.
        mask: Polygon(s) in the grid CRS; pixels whose centre is outside become nodata.
        tags: Extra dataset tags.
        legend: The class names and colours written into the file.
        key_prefix: Start of the task keys (e.g. ``mosaic-<adcode>``).
        block_px: A block's side: the COG's tile side times a power of two
            (default ``tile * 16``: 8192 px, about 0.4 GiB per task at most).

    Raises:
        ConfigError: The window misses the grid, the mask is not polygonal, or ``block_px`` is not allowed.
        InputError: The destination folder is not writable.

    """
    start = time.time()
    plan = cog_plan(dst, grid, output_store_path, window, mask, tags, legend, block_px)
    shared = client.scatter(plan, hash=False)
    prefix = f"{key_prefix}-{plan.attempt}"
    futures = _submit_rounds(client, shared, plan, prefix)
    final = client.submit(assemble_task, shared, start, *futures.values(), key=f"{prefix}-cog",
                          pure=False, priority=10)
    return CogFuture(final, {**futures, final.key: final}, shared)


def cog_plan(
    dst: Path, grid: Grid, output_store_path: Path, window: Window, mask: BaseGeometry | None,
    tags: dict[str, str] | None = None, legend: Legend = SINOLC, block_px: int | None = None,
) -> CogPlan:
    """The plan shared by one attempt's tasks (:func:`submit_cog`'s arguments); makes its parts folder.

    The parts folder and partial file of an earlier attempt at ``dst`` (a driver or
    worker killed meanwhile) are removed: one writer per file at a time.
    """
    dst = Path(dst).resolve()
    win, geometry = overlap(grid, window), polygonal(mask)
    writable_folder(dst.parent, "destination")
    options, tile, factors = cog_options(grid, win, None)
    step = _step(block_px, tile)
    for stale in dst.parent.glob(f".{glob.escape(dst.name)}.*.parts"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in dst.parent.glob(f".{glob.escape(dst.name)}.*.partial*"):  # files.partial_path's names
        stale.unlink(missing_ok=True)  # an assembly killed before its rename
    parts = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.parts"
    make_folders([parts], lambda exc: InputError(f"cannot create {parts} ({exc.strerror}): free the disk "
                                                 "or fix the mosaics folder's permissions"))
    return CogPlan(dst, parts, grid, Path(output_store_path).resolve(), win, geometry,
                   dataset_tags(None, None, tags), legend, tile, factors, options, step)


def _step(block_px: int | None, tile: int) -> int:
    """The levels per round as a factor, from ``block_px`` (``tile * 2**k``, else a :class:`ConfigError`)."""
    if block_px is None:
        return STEP
    step = block_px // tile
    if block_px % tile or step < 2 or step & (step - 1):
        raise ConfigError(f"block_px {block_px} must be the COG's tile side ({tile}) times a power of two "
                          f"of at least 2: use e.g. {tile * STEP}")
    return step


def _submit_rounds(client: Client, shared: Future, plan: CogPlan, prefix: str) -> dict[str, Future]:
    """Submit the block tasks (blocks outside the polygon: none), then each round of group tasks."""
    futures: dict[str, Future] = {}
    window, side = plan.window, plan.block
    made: dict[tuple[int, int], Future] = {}
    for row in range(-(-window.height // side)):
        for col in range(-(-window.width // side)):
            if not outside(plan.grid, plan.block_window(1, row, col), plan.geometry):
                key = f"{prefix}-block-{row}-{col}"
                made[row, col] = futures[key] = client.submit(block_task, shared, row, col, key=key,
                                                              pure=False, priority=10)
    for rnd in range(2, plan.rounds() + 1):
        groups: dict[tuple[int, int], list[tuple[int, int, Future]]] = defaultdict(list)
        for (row, col), future in made.items():
            groups[row // plan.step, col // plan.step].append((row, col, future))
        made = {}
        for (row, col), children in groups.items():
            key = f"{prefix}-round{rnd}-{row}-{col}"
            made[row, col] = futures[key] = client.submit(group_task, shared, rnd, row, col, *children,
                                                          key=key, pure=False, priority=10)
    return futures


def assemble_task(plan: CogPlan, start: float, *made: Made | Refused) -> CogReport | Refused:
    """The last task: the COG from GDAL's empty one and the tasks' tiles; the parts folder removed always."""
    try:
        for value in made:
            if isinstance(value, Refused):
                return value
        return _assemble(plan, start, made)
    except SinolcError as exc:
        return Refused(type(exc), str(exc))
    finally:
        shutil.rmtree(plan.parts, ignore_errors=True)


def _assemble(plan: CogPlan, start: float, made: Sequence[Made]) -> CogReport:
    """Make the empty COG, fill in its tiles into a partial file, validate, rename; its report."""
    sums = AreaSum(plan.grid, plan.legend.codes)
    for value in made:
        if value.areas is not None:
            sums.merge(value.areas)
    km2 = sums.km2
    empty, stage = plan.parts / "empty.cog.tif", plan.parts / "empty.stage.tif"
    caught: list[str] = []
    try:
        with replacing(plan.dst, ".tif") as partial:
            with caught_gdal_errors() as caught:
                make_cog(empty, stage, plan.grid, plan.window, plan.tags,
                         (plan.tile, plan.factors, plan.options), plan.legend, None, km2=km2)
                digest = _fill_tiles(plan, empty, partial, made)
            if caught:  # GDAL may finish a file whose writes failed: never rename one into place
                raise OSError(caught[0])
            overviews, width, height = validated(partial, plan.dst)
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        raise write_failure(plan.dst, exc, caught, open_array(plan.output, plan.grid), plan.window,
                            (plan.dst.parent, plan.parts)) from None
    return CogReport(path=plan.dst, width=width, height=height, bytes=plan.dst.stat().st_size, valid=True,
                     overviews=overviews, seconds=time.time() - start, class_km2=as_table(km2), sha256=digest)


def _fill_tiles(plan: CogPlan, empty: Path, partial: Path, made: Sequence[Made]) -> str:
    """Write ``partial``: the empty COG's header, its tile arrays patched, then every tile; its SHA-256."""
    ifds = read_ifds(empty)
    if len(ifds) != len(plan.factors) + 1:
        raise RuntimeError(f"GDAL's empty COG for {plan.dst} has {len(ifds)} levels, not "
                           f"{len(plan.factors) + 1}: a bug")
    names, levels = _tile_index(ifds, made)
    raw = empty.read_bytes()
    order, position, patched = "<" if raw[:2] == b"II" else ">", len(raw), io.BytesIO(raw)
    del raw  # the header is held once, in ``patched``
    for ifd, (counts, _, _) in reversed(list(zip(ifds, levels, strict=True))):  # smallest level first
        flat = counts.ravel().astype(np.int64)
        sizes = np.where(flat > 0, flat + 8, 0)
        ends = position + np.cumsum(sizes)
        ifd.offsets.write(patched, np.where(flat > 0, ends - sizes + 4, 0))
        ifd.counts.write(patched, flat)
        position = int(ends[-1]) if ends.size else position
    header = patched.getbuffer()
    digest = hashlib.sha256(header)
    with open(partial, "wb", buffering=1 << 23) as out, _Parts(plan.parts, names) as parts:
        out.write(header)
        header.release()
        for counts, part, offsets in reversed(levels):
            for i in np.flatnonzero(counts.ravel()):
                data = parts.read(int(part.flat[i]), int(offsets.flat[i]), int(counts.flat[i]))
                tile = struct.pack(f"{order}I", len(data)) + data + data[-4:]
                out.write(tile)
                digest.update(tile)
    return digest.hexdigest()


def _tile_index(ifds: list[Ifd], made: Sequence[Made]) -> tuple[list[str], list[tuple[np.ndarray, ...]]]:
    """Each level's tile sizes, part numbers and offsets in the parts (tile rows x columns), and the parts."""
    names: list[str] = []
    kinds = (np.uint32, np.int32, np.int64)  # 16 bytes a tile
    levels = [tuple(np.zeros((ifd.tiles_down, ifd.tiles_across), k) for k in kinds) for ifd in ifds]
    for value in made:
        for tiles in value.tiles:
            counts, part, offsets = levels[tiles.level]
            rows, cols = slice(tiles.row, tiles.row + tiles.counts.shape[0]), \
                slice(tiles.col, tiles.col + tiles.counts.shape[1])
            counts[rows, cols], offsets[rows, cols] = tiles.counts, tiles.offsets
            part[rows, cols] = len(names)
            names.append(tiles.part)
    return names, levels


class _Parts:
    """The part files, opened as the tiles are read (at most :data:`_OPEN_PARTS` at once)."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        self.folder, self.names = folder, names
        self._open: OrderedDict[int, BinaryIO] = OrderedDict()

    def __enter__(self) -> _Parts:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._open.values():
            f.close()

    def read(self, part: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of part number ``part``."""
        f = self._open.pop(part, None)
        if f is None:
            if len(self._open) >= _OPEN_PARTS:
                self._open.popitem(last=False)[1].close()
            f = open(self.folder / self.names[part], "rb")  # kept open across reads
        self._open[part] = f
        f.seek(offset)
        return f.read(size)

