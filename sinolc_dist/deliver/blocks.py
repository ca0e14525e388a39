"""The tasks of a COG written by many workers: blocks of the final file's tiles and overview levels.

:func:`sinolc_dist.deliver.tiled.submit_cog` cuts a province's window into
aligned square blocks of ``tile x step`` px from its corner (``step`` a power
of two), one task each; a block whose box misses the province polygon gets no
task.  A block task (:func:`block_task`) reads its block from the output store,
masks it exactly as :func:`sinolc_dist.deliver.cog.write_cog` does, counts its
class areas, makes its overview levels 2 .. ``step`` by the 2 x 2 class mode
(:func:`sinolc_dist.deliver.pyramid.mode2`, hierarchical: a block's levels are
the window's levels over that block) and has GDAL write each level as a tiled
DEFLATE GeoTIFF (a *part*), so every tile is compressed by the same code, with
the same options and the same sparse rule as GDAL's COG driver would use; it
returns where each tile's bytes lie in its parts (read back from the part's
TIFF directory, :mod:`sinolc_dist.deliver.tiff`).  Its top level (``tile`` px
square) is saved beside the parts for the next round: a group task
(:func:`group_task`) puts ``step x step`` of them together and makes the next
``log2(step)`` levels the same way, until every overview is made.

Memory per task: one block and its levels (about 5 bytes a pixel of the block
at most), whatever the window; the blocks outside the province cost nothing.
Expected failures (a full disk) come back as a :class:`Refused` value, so no
worker logs "Compute Failed" and the other tasks of the COG see them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from shapely.geometry.base import BaseGeometry

from sinolc_dist.deliver.pyramid import mode2
from sinolc_dist.deliver.staging import AreaSum, read_masked
from sinolc_dist.deliver.tiff import read_ifds
from sinolc_dist.errors import InputError, SinolcError
from sinolc_dist.gdal_errors import caught_gdal_errors, write_failure
from sinolc_dist.grid import Grid, Window
from sinolc_dist.legend import NODATA, Legend
from sinolc_dist.rundir.stores import open_array


@dataclass(frozen=True)
class Refused:
    """An expected failure on a worker, returned as a value, not raised there.

    A raised error would be logged by the worker as "Compute Failed" with its
    traceback, and would end a gather while other tasks are still writing.
    """

    kind: type[SinolcError]
    message: str


@dataclass(frozen=True)
class CogPlan:
    """What every task of one COG shares (sent to the cluster once).

    Attributes:
        dst: The final COG.
        parts: The folder of part files beside it (removed by the assembly, whatever happens).
        grid: The output store's grid.
        output: The output store's path.
        window: The window written (clipped to the grid).
        geometry: The province polygon, prepared (``None``: keep the whole window).
        tags: The COG's dataset tags.
        legend: The class names and colours written into the file.
        tile: The COG's tile side.
        factors: Its overview factors (:func:`sinolc_dist.deliver.pyramid.layout`).
        options: The COG driver's options (:func:`sinolc_dist.deliver.cog.cog_options`).
        step: Levels made per round are ``log2(step)``; a block is ``tile * step`` px square.

    """

    dst: Path
    parts: Path
    grid: Grid
    output: Path
    window: Window
    geometry: BaseGeometry | None
    tags: dict[str, str]
    legend: Legend
    tile: int
    factors: list[int]
    options: dict[str, object] = field(default_factory=dict)
    step: int = 16

    @property
    def attempt(self) -> str:
        """The short id of the attempt (in the parts folder's name and in the task keys)."""
        return self.parts.name.split(".")[-2]

    @property
    def block(self) -> int:
        """A round-1 block's side, px."""
        return self.tile * self.step

    def rounds(self) -> int:
        """Rounds of tasks needed: the first makes levels 1 .. ``step``, each next one ``step`` times more."""
        n, top = 1, self.step
        while self.factors and self.factors[-1] > top:
            n, top = n + 1, top * self.step
        return n

    def level_of(self, factor: int) -> int | None:
        """The file's level index for an overview factor (0: full resolution), ``None`` if not in the file."""
        if factor == 1:
            return 0
        return self.factors.index(factor) + 1 if factor in self.factors else None

    def block_window(self, rnd: int, row: int, col: int) -> Window:
        """Block ``(row, col)`` of round ``rnd`` (1, 2, …) in grid pixels, clipped to the window."""
        side = self.tile * self.step ** rnd
        r0, c0 = self.window.row0 + row * side, self.window.col0 + col * side
        return Window(r0, c0, min(r0 + side, self.window.row1), min(c0 + side, self.window.col1))


@dataclass(frozen=True)
class Tiles:
    """One level's tiles made by one task: where their compressed bytes lie in its part file."""

    level: int
    part: str
    row: int
    col: int
    offsets: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class Made:
    """What a block or group task made: its tiles, its class areas (blocks), its saved top level."""

    tiles: list[Tiles]
    areas: np.ndarray | None = None
    top: str | None = None


def block_task(plan: CogPlan, row: int, col: int) -> Made | Refused:
    """Round 1: block ``(row, col)`` from the store, masked; its full-resolution tiles and first levels."""
    block = plan.block_window(1, row, col)
    if plan.geometry is not None:
        shapely.prepare(plan.geometry)  # a prepared geometry arrives unprepared
    try:
        data = read_masked(open_array(plan.output, plan.grid), plan.grid, block, plan.geometry)
        if data is None:
            return Made([])
        sums = AreaSum(plan.grid, plan.legend.codes)
        sums.add(block, data)
        tiles, top = _levels(plan, 1, (block.row0 - plan.window.row0, block.col0 - plan.window.col0),
                             data, f"b{row}-{col}")
        return Made(tiles, sums.raw, top)
    except SinolcError as exc:
        return Refused(type(exc), str(exc))


def group_task(plan: CogPlan, rnd: int, row: int, col: int,
               *children: tuple[int, int, Any]) -> Made | Refused:
    """Round ``rnd`` >= 2: group ``(row, col)``'s levels from the top levels of its children's round.

    ``children`` are ``(row, col, Made | Refused)`` of the blocks of round ``rnd - 1``
    inside it that had a task (the others are all nodata); a refused child is passed on.
    """
    for _, _, made in children:
        if isinstance(made, Refused):
            return made
    tops = [(r, c, made.top) for r, c, made in children if made.top]
    if not tops:
        return Made([])
    group = plan.block_window(rnd, row, col)
    base = plan.step ** (rnd - 1)
    origin = (group.row0 - plan.window.row0, group.col0 - plan.window.col0)
    data = np.full((-(-(origin[0] + group.height) // base) - origin[0] // base,
                    -(-(origin[1] + group.width) // base) - origin[1] // base), NODATA, np.uint8)
    try:
        for r, c, top in tops:
            with np.load(plan.parts / top) as saved:
                part = saved["top"]
            r0, c0 = (r - row * plan.step) * plan.tile, (c - col * plan.step) * plan.tile
            data[r0:r0 + part.shape[0], c0:c0 + part.shape[1]] = part
        tiles, top = _levels(plan, base, origin, data, f"r{rnd}-{row}-{col}")
    except OSError as exc:
        return Refused(InputError, f"reading the block levels of {plan.dst} in {plan.parts} failed "
                                   f"({exc}): rerun the delivery")
    except SinolcError as exc:
        return Refused(type(exc), str(exc))
    return Made(tiles, None, top)


def _levels(plan: CogPlan, base: int, origin: tuple[int, int], data: np.ndarray,
            name: str) -> tuple[list[Tiles], str | None]:
    """Write the levels of one task (factors ``base`` .. ``base * step``) as parts; save the top level.

    ``data`` is the task's area at factor ``base`` (full resolution for a
    block); its own level is written only in round 1 (the next rounds' base
    level is the one below's top).  ``origin``: the area's top-left pixel in
    the window, full resolution.  The top (factor ``base * step``) is saved
    (``.npz``, compressed) only if larger factors are still to make.
    """
    written, factor = [], base
    try:
        with caught_gdal_errors() as caught:
            if base == 1:
                written.append(_write_part(plan, 0, 1, origin, data, name))
            while factor < base * plan.step:
                data, factor = mode2(data), factor * 2
                level = plan.level_of(factor)
                if level is not None:
                    written.append(_write_part(plan, level, factor, origin, data, name))
        if caught:  # GDAL may finish a file whose writes failed
            raise OSError(caught[0])
        tiles = [_tiles_of(plan, *part, origin) for part in written]
        if not plan.factors or plan.factors[-1] <= factor:
            return tiles, None
        top = f"{name}.top.npz"
        np.savez_compressed(plan.parts / top, top=data)
        return tiles, top
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        raise write_failure(plan.dst, exc, caught, open_array(plan.output, plan.grid), plan.window,
                            (plan.dst.parent, plan.parts)) from None


def _write_part(plan: CogPlan, level: int, factor: int, origin: tuple[int, int], data: np.ndarray,
                name: str) -> tuple[int, int, Path]:
    """One level of a task as a tiled DEFLATE GeoTIFF (GDAL compresses, skipping all-nodata tiles).

    Returns the level, its factor and the part's path.
    """
    path = plan.parts / f"{name}.L{level}.tif"
    corner = plan.grid.window_transform(Window(plan.window.row0 + origin[0], plan.window.col0 + origin[1],
                                               plan.window.row1, plan.window.col1))
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "transform": corner @ Affine.scale(factor),
               "dtype": "uint8", "nodata": NODATA, "tiled": True, "blockxsize": plan.tile,
               "blockysize": plan.tile, "compress": "DEFLATE", "SPARSE_OK": True, "NUM_THREADS": "1"}
    with rasterio.open(path, "w", **profile) as out:
        out.write(data, 1)
    return level, factor, path


def _tiles_of(plan: CogPlan, level: int, factor: int, path: Path, origin: tuple[int, int]) -> Tiles:
    """Where a written part's tiles lie in it, from its TIFF directory (unreadable: ``OSError``)."""
    try:
        (ifd,) = read_ifds(path)
    except InputError as exc:  # the disk filled before GDAL wrote its directory
        raise OSError(f"{path.name} was left incomplete ({exc})") from None
    with open(path, "rb") as f:
        offsets, counts = ifd.offsets.read(f), ifd.counts.read(f)
    shape = (ifd.tiles_down, ifd.tiles_across)
    return Tiles(level, path.name, origin[0] // factor // plan.tile, origin[1] // factor // plan.tile,
                 offsets.reshape(shape), counts.reshape(shape))
