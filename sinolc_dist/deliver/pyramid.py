"""COG overviews by class mode in numpy, written beside the staging file while a mosaic streams.

GDAL's ``MODE`` overview resampling took about half of the COG driver's time on
a class map; :class:`Pyramid` computes the same kind of overviews while the
mosaic streams its pieces (each level the 2 x 2 mode of the level below, nodata
counting only where all four pixels are nodata), writes each level to a tiled
file beside the staging GeoTIFF, and :meth:`Pyramid.vrt` gives the COG driver a
VRT of the stage that declares those files as its overviews, which the driver
then only compresses.  ``benchmarks/bench_mosaic.py`` measures the difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine

from sinolc_dist.legend import NODATA


def mode2(data: np.ndarray) -> np.ndarray:
    """The 2 x 2 mode of a class image (odd sides: the last row/column counts alone).

    The most frequent class among the block's valid pixels, the first in
    row-major order on a tie; nodata only where all four are nodata, so a
    province's edge does not erode level by level.  With four pixels a value
    that occurs twice is a mode, so: ``a`` if it pairs, else ``b``, else ``c``
    pairing with ``d``, else the first valid one.
    """
    h, w = data.shape
    if h % 2 or w % 2:
        data = np.pad(data, ((0, h % 2), (0, w % 2)), mode="edge")
    # Contiguous copies: the comparisons below then run on whole vectors.
    a, b, c, d = (np.ascontiguousarray(data[i::2, j::2]) for i in (0, 1) for j in (0, 1))
    valid_a, valid_b, valid_c = a != NODATA, b != NODATA, c != NODATA
    first = np.where(valid_a, a, np.where(valid_b, b, np.where(valid_c, c, d)))
    out = np.where((c == d) & valid_c, c, first)
    out = np.where(((b == c) | (b == d)) & valid_b, b, out)
    return np.where(((a == b) | (a == c) | (a == d)) & valid_a, a, out)


class Pyramid:
    """Overview levels of a staged window, written piece by piece into files beside it.

    Use as a context manager around the staging loop; pieces must start at
    multiples of the largest factor from the window's corner.  With no factors
    it does nothing.
    """

    def __init__(self, stage: Path, profile: dict[str, Any], factors: list[int]) -> None:
        self.stage, self.factors = stage, factors
        self.paths = [stage.with_name(f"{stage.name}.ovr{f}.tif") for f in factors]
        self._profile = profile
        self._files: list[Any] = []

    def __enter__(self) -> Pyramid:
        for factor, path in zip(self.factors, self.paths, strict=True):
            p = dict(self._profile, width=-(-self._profile["width"] // factor),
                     height=-(-self._profile["height"] // factor),
                     transform=self._profile["transform"] @ Affine.scale(factor))
            self._files.append(rasterio.open(path, "w", **p))
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._files:
            f.close()

    def add(self, row: int, col: int, data: np.ndarray) -> None:
        """Add a piece whose top-left pixel is ``(row, col)`` of the window."""
        level = data
        for factor, out in zip(self.factors, self._files, strict=True):
            level = mode2(level)
            r0, c0 = row // factor, col // factor
            out.write(level, 1, window=((r0, r0 + level.shape[0]), (c0, c0 + level.shape[1])))

    def vrt(self, path: Path, hollow: bool = False) -> Path:
        """Write a VRT of the stage (all its metadata) that lists the level files as overviews.

        ``hollow``: the VRT and its levels (VRTs too, beside ``path``) keep no
        source, so every pixel reads as nodata without a file being read: GDAL's
        COG driver then makes the file of empty tiles of a huge window about
        three times faster than from the sparse stage (it still visits every
        pixel, at some 10 GB/s), with the same bytes.
        """
        levels = [_hollow(level, path.with_name(f"{level.name}.vrt")) if hollow else level
                  for level in self.paths]
        rasterio.shutil.copy(self.stage, path, driver="VRT")
        if hollow:
            _hollow(path, path)
        tree = ET.parse(path)
        for band in tree.getroot().iter("VRTRasterBand"):  # one: the class band
            for level in levels:
                overview = ET.SubElement(band, "Overview")
                ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(level.resolve())
                ET.SubElement(overview, "SourceBand").text = "1"
        tree.write(path, encoding="unicode")
        return path


def _hollow(source: Path, path: Path) -> Path:
    """A VRT of ``source`` (its size, georeferencing and metadata) with no pixel source: all nodata."""
    if source != path:
        rasterio.shutil.copy(source, path, driver="VRT")
    tree = ET.parse(path)
    for band in tree.getroot().iter("VRTRasterBand"):
        for element in [e for e in band if e.tag.endswith("Source")]:
            band.remove(element)
    tree.write(path, encoding="unicode")
    return path
