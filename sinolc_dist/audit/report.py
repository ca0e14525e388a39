"""``audit``: one streamed pass over a class map, its duplicated strips and seams, as a table or JSON.

:func:`audit` opens the file (:func:`~sinolc_dist.audit.source.open_map` refuses
what is not a class map), streams it once with three collectors (the strip
samples, the lines beside the tile grid and, for ``--map``, a quicklook), then
searches both axes for duplicated strips (:mod:`sinolc_dist.audit.strips`) and
the tile lines for seams (:mod:`sinolc_dist.audit.seams`).  Memory is the
samples (about 1,024 lines per axis), the lines beside the grid and one band
of rows, whatever the file's size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from sinolc_dist.audit.quicklook import Quicklook, draw_map
from sinolc_dist.audit.seams import Seam, SeamLines, find_seams
from sinolc_dist.audit.source import Collector, MapInfo, open_map, stream
from sinolc_dist.audit.strips import Samples, Strip, find_strips
from sinolc_dist.errors import ConfigError

#: Sampled lines per axis for the strip search (fewer for a file so long that they would pass SAMPLE_BYTES).
LINES = 1024
SAMPLE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit` found in one file.

    Attributes:
        path: The file audited.
        width: Its columns.
        height: Its rows.
        tile: The tile grid the seams were checked against (``None``: not checked).
        strips: Duplicated strips, columns first, each in file order.
        seams: Offsets, overlaps and gaps on the tile lines.
        seconds: Wall time of the audit.
        map_path: The quicklook written (``--map``), if any.

    """

    path: Path
    width: int
    height: int
    tile: int | None
    strips: list[Strip] = field(default_factory=list)
    seams: list[Seam] = field(default_factory=list)
    seconds: float = 0.0
    map_path: Path | None = None

    @property
    def findings(self) -> int:
        """Strips and seams found (0: the file is clean)."""
        return len(self.strips) + len(self.seams)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON data (``--json``)."""
        return {"path": str(self.path), "width": self.width, "height": self.height, "tile": self.tile,
                "findings": self.findings, "strips": [s.to_dict() for s in self.strips],
                "seams": [s.to_dict() for s in self.seams], "seconds": round(self.seconds, 3),
                "map": None if self.map_path is None else str(self.map_path)}

    def table(self) -> list[tuple[str, str, str, str, str]]:
        """Rows of the findings table: kind, axis, pixels, size/shift, score."""
        rows = [("strip", s.axis, f"[{s.start}, {s.end})", f"{s.width} px",
                 "" if s.similarity is None else f"{s.similarity:.3f}") for s in self.strips]
        rows += [(s.kind, s.axis, f"line {s.position}, [{s.start}, {s.end})", f"{s.shift:+d} px",
                  f"{s.score:.3f}") for s in self.seams]
        return rows


def audit(path: Path, tile: int | None = None, min_width: int = 16, max_width: int | None = None,
          map_path: Path | None = None, seams: bool = True) -> AuditReport:
    """Find every duplicated strip (both axes) and, against a tile grid, every seam in one class map.

    Why: the released provincial files carry duplicated strips that users found
    by eye; this finds them with exact start and width in one streamed pass.

    Args:
        path: A single-band integer GeoTIFF, COG or VRT with a CRS.
        tile: Tile side of the grid the seams are checked against; ``None``: the
            file's own tiles (a striped file then gets no seam check).
        min_width: Narrowest strip searched for (px, at least 4).
        max_width: Widest strip searched for (px; default half the file's side).
        map_path: Write a quicklook PNG marking what was found here.
        seams: Check seams too (repair needs strips only).

    """
    start = time.perf_counter()
    if min_width < 4:
        raise ConfigError(f"--min-width {min_width} is too small: strips narrower than 4 px cannot be told "
                          "from natural repetition; give 4 or more")
    if tile is not None and tile < 16:
        raise ConfigError(f"--tile {tile} is too small: give the side (px, >= 16) of the tiles the map was "
                          "stitched from")
    with open_map(path) as (src, info):
        grid = _grid(info, tile) if seams else None
        side = max(info.width, info.height) * np.dtype(info.dtype).itemsize
        samples = Samples(info.height, info.width, info.dtype, max(64, min(LINES, SAMPLE_BYTES // side)))
        lines = SeamLines(info.height, info.width, info.dtype, grid) if grid else None
        look = Quicklook(info.height, info.width, info.dtype) if map_path else None
        collectors: list[Collector] = [c for c in (samples, lines, look) if c is not None]
        stream(src, info, collectors)
        colormap = _colormap(src)
    strips = [*find_strips(samples.rows, "columns", info.nodata, min_width, max_width),
              *find_strips(samples.cols, "rows", info.nodata, min_width, max_width)]
    found = find_seams(lines, info.nodata) if lines else []
    if look is not None and map_path is not None:
        draw_map(look, strips, found, Path(map_path), colormap, title=Path(path).name)
    return AuditReport(Path(path), info.width, info.height, grid, strips, found,
                       time.perf_counter() - start, None if map_path is None else Path(map_path))


def _grid(info: MapInfo, tile: int | None) -> int | None:
    """The tile side seams are checked against: the one given, else the file's square tiles."""
    if tile is not None:
        return tile
    rows, cols = info.block
    return cols if rows == cols and cols < info.width else None


def _colormap(src: rasterio.io.DatasetReader) -> dict[int, tuple[int, int, int, int]] | None:
    """The file's colour table, if it has one."""
    try:
        return src.colormap(1)
    except ValueError:
        return None
