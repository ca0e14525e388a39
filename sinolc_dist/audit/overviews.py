"""A repaired map's overview levels, made in one streamed pass before GDAL's COG driver compresses them.

Left to itself, GDAL's COG driver reads the whole source to build overviews
into a temporary GeoTIFF, then reads it all again with that file to write the
COG: on a 2.5 Gpx map it ran at half the speed of a plain copy.  Here the
levels are taken in one pass over the repaired raster (the VRT over the
original), in square blocks aligned to the largest factor, so memory is one
block whatever the file's width.  Each level is a nearest-neighbour
decimation of the full resolution (overview pixel ``i`` is source pixel
``i*f + f//2``, clamped to the last one: the pixel nearest its centre, as GDAL's
``NEAREST`` takes it) written to a quickly compressed tiled file; a VRT then
declares them as overviews and the COG driver, told to use them
(``OVERVIEWS=FORCE_USE_EXISTING``), only compresses.  Nearest keeps every
overview pixel a class the map really has at that place, and costs no
arithmetic; the levels are those of :func:`sinolc_dist.cog_layout.layout`.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
from affine import Affine

#: Side of the blocks read at once (raised to the largest factor when that is larger).
BLOCK = 4096
#: Compression of the level files: fast, since the COG driver re-encodes them at once.
_LEVEL_PROFILE = {"driver": "GTiff", "count": 1, "tiled": True, "compress": "ZSTD", "zstd_level": 1,
                  "BIGTIFF": "IF_SAFER", "SPARSE_OK": True}


def level_paths(stem: Path, factors: list[int]) -> list[Path]:
    """Where each level's file goes: beside ``stem``, named after it and the factor."""
    return [stem.with_name(f"{stem.name}.ovr{f}.tif") for f in factors]


def decimate(data: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """A level's ``shape`` of lines over a block whose first line is a multiple of ``factor``.

    Level line ``i`` takes the block's line ``i*factor + factor//2``, or the
    block's last line where that is past its end (only in the map's last block);
    strided slices, not fancy indexing, which took four times longer.
    """
    level = np.empty(shape, data.dtype)
    half = factor // 2
    body = data[half::factor, half::factor]
    h, w = body.shape
    level[:h, :w] = body
    if h < shape[0]:
        level[h, :w] = data[-1, half::factor]
    if w < shape[1]:
        level[:h, w] = data[half::factor, -1]
    if h < shape[0] and w < shape[1]:
        level[h, w] = data[-1, -1]
    return level


def write_levels(source: Path, stem: Path, factors: list[int], tile: int) -> list[Path]:
    """Read ``source`` once in aligned blocks and write its decimated levels, one file per factor.

    Why: the COG driver then reads the full resolution once instead of twice
    and never makes its own temporary overview file.  Returns the level files
    (:func:`level_paths`), which the caller removes.
    """
    paths = level_paths(stem, factors)
    side = max(BLOCK, factors[-1])
    with rasterio.open(source) as src:
        height, width = src.height, src.width
        outs = [rasterio.open(path, "w", width=-(-width // f), height=-(-height // f), dtype=src.dtypes[0],
                              crs=src.crs, transform=src.transform @ Affine.scale(f), nodata=src.nodata,
                              blockxsize=tile, blockysize=tile, **_LEVEL_PROFILE)
                for f, path in zip(factors, paths, strict=True)]
        try:
            for row in range(0, height, side):
                for col in range(0, width, side):
                    rows, cols = (row, min(row + side, height)), (col, min(col + side, width))
                    data = src.read(1, window=(rows, cols))
                    for factor, out in zip(factors, outs, strict=True):
                        r0, c0 = row // factor, col // factor
                        r1, c1 = -(-rows[1] // factor), -(-cols[1] // factor)
                        out.write(decimate(data, factor, (r1 - r0, c1 - c0)), 1, window=((r0, r1), (c0, c1)))
        finally:
            for out in outs:
                out.close()
    return paths


def with_overviews(vrt: str, paths: list[Path]) -> str:
    """The VRT text with the level files declared as its band's overviews (smallest factor first)."""
    root = ET.fromstring(vrt)
    band = root.find("VRTRasterBand")
    assert band is not None
    for path in paths:
        overview = ET.SubElement(band, "Overview")
        ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(path.resolve())
        ET.SubElement(overview, "SourceBand").text = "1"
    return ET.tostring(root, encoding="unicode")
