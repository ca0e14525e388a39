"""``audit --map``: a quicklook of the audited file with its strips and seams marked.

The picture is gathered during the audit's one pass (:class:`Quicklook` keeps
every ``step``-th pixel of every ``step``-th row, nearest neighbour, so a file
without overviews is never read twice), drawn in the file's own colour table
(or SinoLC-1's legend colours) on matplotlib's Agg canvas, duplicated strips
as hatched bands outlined in black, seams as cyan ticks, and written atomically as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sinolc_dist.audit.seams import Seam
from sinolc_dist.audit.strips import Strip
from sinolc_dist.errors import InputError
from sinolc_dist.files import atomic_write
from sinolc_dist.legend import NODATA, SINOLC

#: Longest side of the quicklook, in pixels of the picture.
SIDE = 1200


class Quicklook:
    """Collector: every ``step``-th pixel of every ``step``-th row (the long side near :data:`SIDE` px)."""

    def __init__(self, height: int, width: int, dtype: str) -> None:
        self.step = max(1, math.ceil(max(height, width) / SIDE))
        self.image = np.zeros((-(-height // self.step), -(-width // self.step)), dtype)

    def add(self, row0: int, band: np.ndarray) -> None:
        """Keep the band's rows that fall on the picture's lattice."""
        first = (-row0) % self.step
        picked = band[first::self.step, ::self.step]
        at = (row0 + first) // self.step
        self.image[at:at + picked.shape[0]] = picked


def _colours(image: np.ndarray, colormap: dict[int, tuple[int, int, int, int]] | None) -> np.ndarray:
    """RGBA of each pixel: the file's colour table, else SinoLC-1's legend, else grey; nodata clear."""
    codes = np.unique(image)
    table = colormap or {code: (*rgb, 255) for code, rgb in SINOLC.colours().items()}
    lut = np.zeros((int(codes.max()) + 1, 4), np.uint8)
    for code in codes.tolist():
        lut[code] = table.get(code, (128, 128, 128, 255))
    lut[NODATA] = (0, 0, 0, 0)
    return lut[image]


def draw_map(look: Quicklook, strips: Sequence[Strip], seams: Sequence[Seam], path: Path,
             colormap: dict[int, tuple[int, int, int, int]] | None, title: str = "") -> Path:
    """Write the quicklook with strips and seams marked (in file pixels) as a PNG at ``path``.

    Why: a user checks a finding by eye before repairing, as the authors' tool
    made them read indices in QGIS.
    """
    height, width = look.image.shape[0] * look.step, look.image.shape[1] * look.step
    fig = Figure(figsize=(8, 8 * height / max(width, 1) + 0.6), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(_colours(look.image, colormap), extent=(0, width, height, 0), interpolation="nearest")
    for strip in strips:
        span = ax.axvspan if strip.axis == "columns" else ax.axhspan
        span(strip.start, strip.end, facecolor=(1, 0, 1, 0.2), edgecolor="black", hatch="//", lw=1.2)
        label = f"{strip.axis} [{strip.start}, {strip.end})"
        if strip.axis == "columns":
            ax.text(strip.start, 0, label, color="black", fontsize="x-small", va="top", rotation=90)
        else:
            ax.text(0, strip.start, label, color="black", fontsize="x-small", va="bottom")
    for seam in seams:
        xs, ys = (seam.position, seam.position), (seam.start, seam.end)
        ax.plot(*((xs, ys) if seam.axis == "columns" else (ys, xs)), color="cyan", lw=2)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(f"{title}: {len(strips)} strip(s), {len(seams)} seam(s)", fontsize="small")
    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", bbox_inches="tight"), binary=True)
    except OSError as exc:
        raise InputError(f"cannot write map {path}: {exc.strerror or exc}; free space there or choose "
                         "another --map path") from None
    return Path(path)
