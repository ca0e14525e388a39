"""Pictures of a run: the planned chunks, or their states, over province outlines.

A national plan holds over half a million chunks, so no chunk is drawn as a
patch: :func:`chunk_raster` lays them into a small uint8 image, one pixel per
chunk over the bounding box of their indices, which ``imshow`` places with the
grid's coordinates so that it lines up with the province outlines (reprojected
to the grid's CRS and simplified to a fraction of a chunk, for drawing only).
The whole country takes about two seconds and under 100 MB.

:func:`quicklook` draws provincial COGs (or the national VRT's files) in the
legend's colours, from their overviews.

Figures are drawn with :class:`matplotlib.figure.Figure` on the Agg canvas (no
pyplot, no global state) and written atomically as PNG.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import rasterio
import shapely
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from sinolc_dist.errors import InputError
from sinolc_dist.files import atomic_write
from sinolc_dist.grid import Grid
from sinolc_dist.legend import NODATA, SINOLC, Legend
from sinolc_dist.regions.plan import Plan
from sinolc_dist.regions.provinces import province_by_name
from sinolc_dist.regions.region import province_geometries, to_crs
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, StateStore

#: Plan map values: 1 = chunk in one province (or none), 2 = chunk on a border.
_PLAN_COLOURS = ("#79a9cf", "#f5aa60")
#: Status map values, 1..3 in this order.
_STATUS_COLOURS = {PENDING: "#c8c8c8", DONE: "#5cb85c", FAILED: "#d62728", NO_IMAGERY: "#9467bd"}
_OUTLINE = "#303030"


def chunk_raster(
    grid: Grid, rows: np.ndarray, cols: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Lay per-chunk values into an image, one pixel per chunk, 0 where there is none.

    The image covers the bounding box of the chunk indices; pixel ``(i, j)`` is
    chunk ``(rows.min() + i, cols.min() + j)``.  Returns the uint8 image and its
    ``imshow`` extent ``(left, right, bottom, top)`` in the grid's CRS: whole
    chunk sides (not clipped at the grid's edge) so that every pixel is exactly
    one chunk.  Needs at least one chunk.
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    r0, c0 = int(rows.min()), int(cols.min())
    image = np.zeros((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), np.uint8)
    image[rows - r0, cols - c0] = values
    step = grid.chunk * grid.resolution
    x0, y0 = grid.origin
    height, width = image.shape
    extent = (x0 + c0 * step, x0 + (c0 + width) * step,
              y0 - (r0 + height) * step, y0 - r0 * step)
    return image, extent


def plan_map(plan: Plan, path: Path) -> Path:
    """Draw a plan's chunks over its provinces' outlines as a PNG; returns ``path``.

    Chunks touching two or more provinces are highlighted (they are written into
    several provincial mosaics).  A ``bbox``/file region is outlined too.
    """
    path = _writable(Path(path))
    sel, grid, region = plan.selection, plan.grid, plan.region
    touched = np.fromiter((len(p) for p in sel.provinces), np.int64, len(sel))
    values = np.where(touched > 1, 2, 1).astype(np.uint8)
    image, extent = chunk_raster(grid, sel.rows, sel.cols, values)
    fig, ax = _figure(image)
    _draw_chunks(ax, image, extent, _PLAN_COLOURS)
    polys = province_geometries(tuple(p.adcode for p in region.provinces), region.boundaries)
    view = _view(extent, grid)
    _draw_outlines(ax, polys.values(), grid, view, color=_OUTLINE)
    handles = [
        Patch(color=_PLAN_COLOURS[0], label=f"chunk ({int((values == 1).sum()):,})"),
        Patch(color=_PLAN_COLOURS[1],
              label=f"chunk on a province border ({int((values == 2).sum()):,})"),
        Line2D([], [], color=_OUTLINE, linewidth=0.8, label="province outline"),
    ]
    if region.kind in ("bbox", "file"):
        _draw_outlines(ax, [region.geometry], grid, view, color="black", linestyle="--",
                       zorder=3)
        handles.append(Line2D([], [], color="black", linestyle="--", label="region"))
    _legend(ax, handles)
    ax.set_title(f"plan for {_region_label(region.spec)}: {len(sel):,} chunks of "
                 f"{grid.chunk} × {grid.chunk} px")
    return _save(fig, ax, view, path)


def status_map(run_dir: Path, path: Path) -> Path:
    """Draw a run's chunks coloured by state (pending, done, failed, no-imagery) as a PNG; returns ``path``.

    Reads the frozen ``run.json`` (grid, region, boundaries) and ``state.sqlite``
    without changing either, so it is safe while a driver runs.
    """
    path = _writable(Path(path))
    rundir = RunDir(Path(run_dir))
    config = rundir.read_config()
    grid = config.grid
    codes = {status: i for i, status in enumerate(_STATUS_COLOURS, start=1)}
    rows: list[int] = []
    cols: list[int] = []
    values: list[int] = []
    adcodes: set[str] = set()
    if rundir.state.is_file():  # opening a missing state would create it
        with StateStore(rundir.state) as state:
            rows, cols, statuses = state.positions()
            values = [codes[s] for s in statuses]
            adcodes = {code for group, _, _ in state.status_groups() for code in group}
    if not rows:
        raise InputError(
            f"run {rundir.root} has no planned chunks to draw: plan it first "
            "(`sinolc-dist plan` or `sinolc-dist run`)"
        )
    counts = np.bincount(values, minlength=len(codes) + 1)
    image, extent = chunk_raster(grid, np.array(rows), np.array(cols), np.array(values, np.uint8))
    fig, ax = _figure(image)
    _draw_chunks(ax, image, extent, tuple(_STATUS_COLOURS.values()))
    view = _view(extent, grid)
    polys = province_geometries(sorted(adcodes), config.boundaries)
    _draw_outlines(ax, polys.values(), grid, view, color=_OUTLINE)
    handles = [Patch(color=colour, label=f"{status} ({counts[codes[status]]:,})")
               for status, colour in _STATUS_COLOURS.items()]
    handles.append(Line2D([], [], color=_OUTLINE, linewidth=0.8, label="province outline"))
    _legend(ax, handles)
    summary = ", ".join(f"{counts[codes[s]]:,} {s}" for s in (DONE, FAILED, PENDING, NO_IMAGERY)
                        if s != NO_IMAGERY or counts[codes[s]])
    ax.set_title(f"run {_region_label(str(config.region))}: {summary}")
    return _save(fig, ax, view, path)


# ------------------------------------------------------------------ drawing
def _figure(image: np.ndarray) -> tuple[Figure, Axes]:
    """A 9 × 8 in figure whose resolution gives a chunk about one pixel (150 to 300 dpi)."""
    fig = Figure(figsize=(9, 8), dpi=int(np.clip(max(image.shape) / 6, 150, 300)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig, ax


def _draw_chunks(ax: Axes, image: np.ndarray, extent: tuple[float, float, float, float],
                 colours: tuple[str, ...]) -> None:
    """Show the chunk image; value 0 transparent, value ``i`` in ``colours[i - 1]``."""
    lut = np.round(to_rgba_array([(0, 0, 0, 0), *colours]) * 255).astype(np.uint8)
    # Blending in RGBA space keeps one-chunk-wide borders visible when downsampled;
    # uint8 RGBA needs about half the memory of a colour-mapped image when drawn.
    ax.imshow(lut[image], extent=extent, origin="upper", interpolation="antialiased",
              interpolation_stage="rgba", zorder=1)


def _legend(ax: Axes, handles: list[Artist]) -> None:
    """Put the legend below the map, in one row, where it hides no chunk."""
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=len(handles),
              fontsize="small", frameon=False)


def _view(extent: tuple[float, float, float, float], grid: Grid) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` shown: the chunks' extent with a margin of ≥ one chunk."""
    left, right, bottom, top = extent
    pad = max(0.04 * max(right - left, top - bottom), grid.chunk * grid.resolution)
    return left - pad, bottom - pad, right + pad, top + pad


def _draw_outlines(ax: Axes, geoms: Iterable[BaseGeometry], grid: Grid,
                   view: tuple[float, float, float, float], **style: object) -> None:
    """Draw polygons' boundaries in the grid's CRS, clipped to the view and simplified."""
    lines = [to_crs(shapely.boundary(g), grid.crs) for g in geoms]
    lines = shapely.get_parts(shapely.clip_by_rect(np.array(lines, dtype=object), *view))
    # Simplified for the picture only: a quarter of a chunk is below what one pixel shows.
    lines = shapely.simplify(lines, grid.chunk * grid.resolution / 4)
    coords, index = shapely.get_coordinates(lines, return_index=True)
    if len(coords):
        segments = np.split(coords, np.flatnonzero(np.diff(index)) + 1)
        # Thinner than a third of a chunk, so a one-chunk border strip stays visible.
        width = float(np.clip(_chunk_points(ax, view, grid) / 3, 0.1, 0.5))
        ax.add_collection(LineCollection(segments, linewidth=width, **style))


def _chunk_points(ax: Axes, view: tuple[float, float, float, float], grid: Grid) -> float:
    """Side of one chunk on the page, in points, once the view fills the axes."""
    box = ax.get_position()
    fig = ax.get_figure()
    inches = min(box.width * fig.get_figwidth() / (view[2] - view[0]),
                 box.height * fig.get_figheight() / (view[3] - view[1]))
    return grid.chunk * grid.resolution * inches * 72


def _region_label(spec: str) -> str:
    """A region for a title in Latin script (the default font has no CJK glyphs)."""
    if spec.lower().endswith((".geojson", ".json", ".gpkg")):
        return Path(spec).name
    provs = [province_by_name(t) for t in re.split(r"[,，、;]", spec) if t.strip()]
    if provs and all(provs):
        return ", ".join(p.name_en for p in provs if p)
    return spec


def _writable(path: Path) -> Path:
    """Check, before any drawing, that the map's folder exists and may be written."""
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "is not writable" if folder.is_dir() else "does not exist"
        raise InputError(f"cannot write map {path}: folder {folder} {why}; "
                         "create it or give a writable path for --map")
    return path


def _save(fig: Figure, ax: Axes, view: tuple[float, float, float, float], path: Path) -> Path:
    """Write the figure as PNG beside ``path``, then rename it into place."""
    ax.set_xlim(view[0], view[2])
    ax.set_ylim(view[1], view[3])
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi="figure", bbox_inches="tight"),
                     binary=True)
    except OSError as exc:
        raise InputError(f"cannot write map {path}: {exc.strerror or exc}; free space on its file "
                         "system or make it writable, then run the same command again") from None
    return path



# ------------------------------------------------------------------ quicklooks
#: Longest side of a quicklook's map, in map pixels (the PNG is about 1.5 times wider).
QUICKLOOK_SIDE = 1200


def quicklook(sources: Path | Sequence[Path], path: Path, title: str = "",
              side: int = QUICKLOOK_SIDE, legend: Legend = SINOLC) -> Path:
    """Draw class mosaics in the legend's colours, with a legend, as a PNG; returns ``path``.

    ``sources`` are COGs of one CRS, or a VRT over them (its files are drawn).
    Each file is read from the coarsest overview still at least as fine as the
    picture, decimated with nearest neighbour: a province or the whole country
    takes a second or so, never a read at full resolution (unless a file is
    smaller than the picture).
    """
    path = _writable(Path(path))
    files = _quicklook_files(sources)
    with rasterio.open(files[0]) as src:
        crs, res = src.crs, src.res[0]
    boxes = []
    for file in files:
        with rasterio.open(file) as src:
            if src.crs != crs:
                raise InputError(f"cannot draw {file} with {files[0]}: their CRSs differ")
            boxes.append(src.bounds)
    left, bottom = min(b.left for b in boxes), min(b.bottom for b in boxes)
    right, top = max(b.right for b in boxes), max(b.top for b in boxes)
    step = max(right - left, top - bottom, res) / side
    canvas = np.zeros((max(1, math.ceil((top - bottom) / step)),
                       max(1, math.ceil((right - left) / step))), np.uint8)
    for file in files:
        _paste(canvas, file, left, top, step)
    fig, ax = _figure(canvas)
    lut = np.zeros((256, 4), np.uint8)
    colours = legend.colours()
    for code, rgb in colours.items():
        lut[code] = (*rgb, 255)
    extent = (left, left + canvas.shape[1] * step, top - canvas.shape[0] * step, top)
    ax.imshow(lut[canvas], extent=extent, origin="upper", interpolation="nearest", zorder=1)
    if crs.is_geographic:  # degrees of longitude shrink with latitude
        ax.set_aspect(1 / math.cos(math.radians((extent[2] + extent[3]) / 2)))
    present = [int(c) for c in np.unique(canvas) if c != NODATA and c in colours]
    handles = [Patch(facecolor=np.array(colours[c]) / 255, edgecolor="#808080", linewidth=0.3,
                     label=legend.name_of(c)) for c in present]
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                  ncols=min(4, len(handles)), fontsize="small", frameon=False)
    ax.set_title(title)
    return _save(fig, ax, (extent[0], extent[2], extent[1], extent[3]), path)


def _quicklook_files(sources: Path | Sequence[Path]) -> list[Path]:
    """The raster files to draw: the given ones, a VRT replaced by its source files."""
    items = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    files: list[Path] = []
    for item in items:
        if item.suffix.lower() == ".vrt":
            with rasterio.open(item) as src:
                files.extend(Path(f) for f in src.files if Path(f).suffix.lower() != ".vrt")
        else:
            files.append(item)
    if not files:
        raise InputError("nothing to draw: give provincial COGs or the national VRT")
    return files


def overview_level(factors: Sequence[int], decimation: float) -> int | None:
    """Index of the coarsest overview no coarser than ``decimation``; ``None``: full resolution."""
    levels = [i for i, f in enumerate(factors) if f <= decimation]
    return levels[-1] if levels else None


def _paste(canvas: np.ndarray, file: Path, left: float, top: float, step: float) -> None:
    """Read one file decimated to the canvas's pixel size and lay its classes (not nodata) on it."""
    with rasterio.open(file) as src:
        b = src.bounds
        level = overview_level(src.overviews(1), step / src.res[0])
    r0, c0 = round((top - b.top) / step), round((b.left - left) / step)
    r1 = min(canvas.shape[0], max(r0 + 1, round((top - b.bottom) / step)))
    c1 = min(canvas.shape[1], max(c0 + 1, round((b.right - left) / step)))
    options = {} if level is None else {"OVERVIEW_LEVEL": level}
    with rasterio.open(file, **options) as src:
        data = src.read(1, out_shape=(r1 - r0, c1 - c0), resampling=Resampling.nearest)
    view = canvas[r0:r1, c0:c1]
    np.copyto(view, data, where=data != NODATA)
