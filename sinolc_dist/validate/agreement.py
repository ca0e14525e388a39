"""The agreement map of ``validate --against``: 1 agree, 2 disagree, 0 not compared, as a COG.

Written block by block into a tiled GeoTIFF stage beside it (bounded memory),
then turned into a Cloud-Optimised GeoTIFF by GDAL's COG driver (nearest
overviews, DEFLATE) and renamed into place; the stage is removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window as RioWindow

from sinolc_dist.files import replacing
from sinolc_dist.grid import Grid, Window

#: The map's colour table: agreement green, disagreement red, not compared transparent.
AGREEMENT_COLOURS = {0: (0, 0, 0, 0), 1: (26, 152, 80, 255), 2: (215, 48, 39, 255)}


class AgreementWriter:
    """The agreement map: a tiled GeoTIFF stage written block by block, then a COG (atomically)."""

    def __init__(self, path: Path, target: Grid, extent: Window) -> None:
        self.path, self.target, self.extent = path, target, extent
        self.stage = path.with_name(f".{path.stem}.stage.tif")

    def __enter__(self) -> AgreementWriter:
        """Open the stage over the extent."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dst = rasterio.open(
            self.stage, "w", driver="GTiff", width=self.extent.width, height=self.extent.height, count=1,
            dtype="uint8", crs=self.target.crs, transform=self.target.window_transform(self.extent), nodata=0,
            tiled=True, blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
        self.dst.write_colormap(1, AGREEMENT_COLOURS)
        return self

    def write(self, window: Window, data: np.ndarray) -> None:
        """Write one block lying on the target grid (clipped to the extent)."""
        part = window.intersect(self.extent)
        if part.height > 0 and part.width > 0:
            self.dst.write(data[part.within(window)], 1, window=RioWindow(
                part.col0 - self.extent.col0, part.row0 - self.extent.row0, part.width, part.height))

    def __exit__(self, kind: object, *exc: object) -> None:
        """Make the COG when the block ended normally; remove the stage in any case."""
        self.dst.close()
        try:
            if kind is None:
                with replacing(self.path, ".tif") as partial:
                    rasterio.shutil.copy(self.stage, partial, driver="COG", COMPRESS="DEFLATE",
                                         OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")
        finally:
            self.stage.unlink(missing_ok=True)
