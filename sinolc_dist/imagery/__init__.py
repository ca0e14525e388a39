"""Imagery ingest: GeoTIFF/COG/VRT files and web-map tiles of any CRS → the input Zarr store.

- :mod:`~sinolc_dist.imagery.sources`: source arguments, the index record and the
  priority rule;
- :mod:`~sinolc_dist.imagery.index`: each file opened once (footprint in the grid's
  CRS, dates, bands) and what changed since the last ingest;
- :mod:`~sinolc_dist.imagery.warp`: one grid window composited from the sources
  (GDAL warper, first valid pixel wins, masks and alpha → nodata, uint16/float →
  uint8), as :class:`~sinolc_dist.imagery.sources.CompositeOptions` say;
- :mod:`~sinolc_dist.imagery.xyz`: XYZ tile sets as one Web Mercator raster (tile pasting);
- :mod:`~sinolc_dist.engine.ingest_task`: the per-shard task a worker runs;
- :mod:`~sinolc_dist.stages.ingest`: the resumable stage on the cluster (driver side,
  imported on its own so that workers load no torch).

Reading without ingest: :func:`~sinolc_dist.imagery.warp.read_window` gives any
window (a chunk with its halo) straight from an index.  It saves the second copy
of the imagery (≈29 TB of uint8 RGB for China) but warps again on every read:
each inference attempt re-decodes and re-resamples its sources (JPEG tiles,
deflate COGs) on the GPU workers' CPUs, halos (``2 × halo`` px per side) are
warped twice, and the result depends on GDAL's version on each worker.
Ingest once when the imagery will be read more than once (reruns, several
models); read directly for a one-off pass with spare worker CPU.
"""

from sinolc_dist.imagery.index import build_index
from sinolc_dist.imagery.sources import CompositeOptions, ImageryIndex, Source
from sinolc_dist.imagery.warp import fill_window, read_window

__all__ = ["CompositeOptions", "ImageryIndex", "Source", "build_index", "fill_window", "read_window"]
