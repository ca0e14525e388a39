"""A class map opened for auditing: the checks every audit and repair makes, and one streamed pass.

Audit and repair take any single-band integer GeoTIFF, COG or VRT with a CRS,
ours or anyone's.  :func:`open_map` refuses anything else with one line that
names the file and the fix.  :func:`stream` reads the file once, top to
bottom, in bands of whole block rows (each compressed tile is decoded once,
memory is one band), and hands each band to every :class:`Collector`: the strip
samples, the seam lines and the quicklook each keep only what they need.
:func:`expand_vrts` audits a VRT (the national one) file by file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from sinolc_dist.errors import InputError

#: Rows read at once are at least this many (several block rows of a finely tiled file).
_MIN_BAND_ROWS = 256
#: GDAL's block cache while streaming: one band of a 52,000 px wide file, with room to spare.
GDAL_ENV = {"GDAL_CACHEMAX": 256 * 2**20, "GDAL_NUM_THREADS": "ALL_CPUS"}


class Collector(Protocol):
    """Something that keeps what it needs from each band of rows as the file streams past."""

    def add(self, row0: int, band: np.ndarray) -> None:
        """Take what is needed from ``band`` (rows ``row0 …`` of the file, all columns)."""


@dataclass(frozen=True)
class MapInfo:
    """What an audit needs to know about a class map besides its pixels."""

    path: Path
    width: int
    height: int
    dtype: str
    nodata: int | None
    block: tuple[int, int]  # (rows, columns) of the file's blocks (tiles or strips)


@contextmanager
def open_map(path: Path) -> Iterator[tuple[rasterio.io.DatasetReader, MapInfo]]:
    """Open a class map for reading after checking that audit and repair can take it.

    Why: a multi-band image, a file without CRS or a float raster is not a land-cover
    class map; each is refused with one :class:`InputError` before anything is read.
    """
    path = Path(path)
    try:
        src = rasterio.open(path)
    except (RasterioError, OSError) as exc:
        reason = str(exc).rstrip(".")
        raise InputError(f"cannot read {path} ({reason}): give a GeoTIFF, COG or VRT GDAL opens") from None
    with src:
        _check(path, src)
        rows, cols = src.block_shapes[0]
        nodata = None if src.nodata is None else int(src.nodata)
        yield src, MapInfo(path, src.width, src.height, src.dtypes[0], nodata, (rows, cols))


def _check(path: Path, src: rasterio.io.DatasetReader) -> None:
    """Refuse what is not a single-band integer class map with a CRS."""
    if src.count != 1:
        raise InputError(f"{path} has {src.count} bands: audit and repair take a single-band class map; "
                         "extract the class band first (gdal_translate -b N)")
    if src.crs is None:
        raise InputError(f"{path} has no CRS: assign the map's CRS first (gdal_edit.py -a_srs EPSG:…)")
    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        raise InputError(f"{path} holds {src.dtypes[0]} values, not class codes: audit and repair take an "
                         "integer class map (uint8, uint16, …)")


def expand_vrts(paths: Sequence[Path]) -> list[Path]:
    """The files to audit: each path, a VRT replaced by the files it mosaics (in order, each once).

    Why: the national VRT is millions of pixels wide; its provincial files are
    where strips and seams live, and each is audited in bounded memory.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        sources = _vrt_sources(path) if path.suffix.lower() == ".vrt" else []
        files.extend(f for f in (sources or [path]) if f not in files)
    return files


def _vrt_sources(path: Path) -> list[Path]:
    """The source files of a VRT (empty when it cannot be read as one: ``open_map`` then says why)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return []
    return [path.parent / el.text if el.get("relativeToVRT") == "1" else Path(el.text)
            for el in root.iter("SourceFilename") if el.text]


def band_rows(info: MapInfo) -> int:
    """Rows per streamed band: whole block rows, at least :data:`_MIN_BAND_ROWS`."""
    block = max(1, info.block[0])
    return block * -(-_MIN_BAND_ROWS // block)


def stream(src: rasterio.io.DatasetReader, info: MapInfo, collectors: Sequence[Collector]) -> None:
    """Read the whole file once in bands of whole block rows and hand each band to every collector.

    An unreadable block (a truncated or corrupt file) is one :class:`InputError` naming the rows.
    """
    step = band_rows(info)
    with rasterio.Env(**GDAL_ENV):
        for row0 in range(0, info.height, step):
            rows = min(step, info.height - row0)
            try:
                band = src.read(1, window=((row0, row0 + rows), (0, info.width)))
            except (RasterioError, OSError) as exc:
                raise InputError(f"cannot read rows {row0}..{row0 + rows} of {info.path} ({exc}): "
                                 "the file is damaged or truncated; fetch it again") from None
            for collector in collectors:
                collector.add(row0, band)


def spread(n: int, count: int) -> np.ndarray:
    """Up to ``count`` distinct indices spread evenly over ``0 … n-1`` (all of them when ``n <= count``)."""
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(np.int64))
