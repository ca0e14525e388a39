"""The demo: a synthetic scene placed in Hubei, run through the production pipeline.

``prepare_demo`` writes the scene into the run directory's input store (the
stand-in for ingest), keeps its true labels as ``demo-truth.tif`` and its
footprint as ``demo-region.geojson``; then the very same :func:`pipeline.run`
as production classifies it on a LocalCluster and writes the mosaic.
``demo_accuracy`` compares the output store with the truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pyproj import Transformer

from sinolc_dist.demo.scene import make_scene
from sinolc_dist.grid import LONLAT, Grid, Window
from sinolc_dist.legend import SINOLC
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages.workflow import load_workflow

#: Where the scene goes: farmland north-west of Wuhan, well inside Hubei.
DEMO_LONLAT = (113.70, 30.95)
DEMO_SIZE = (2048, 2048)
DEMO_SEED = 20231
DEMO_WORKFLOW = "demo"


@dataclass(frozen=True)
class DemoScene:
    """Where the demo scene lies on the grid and where its files are."""

    window: Window
    region_file: Path
    truth_file: Path


def scene_window(grid: Grid, size: tuple[int, int] = DEMO_SIZE) -> Window:
    """The scene's window: chunk-aligned, one chunk off the shard lattice (partial shards)."""
    to_grid = Transformer.from_crs(LONLAT, grid.crs, always_xy=True)
    x, y = to_grid.transform(*DEMO_LONLAT)
    row = int((grid.origin[1] - y) / grid.resolution) // grid.shard_px * grid.shard_px + grid.chunk
    col = int((x - grid.origin[0]) / grid.resolution) // grid.shard_px * grid.shard_px + grid.chunk
    return Window(row, col, row + size[0], col + size[1])


def prepare_demo(
    rundir: RunDir, workflow: str = DEMO_WORKFLOW, size: tuple[int, int] = DEMO_SIZE
) -> DemoScene:
    """Write the demo scene, truth and region into a run directory (once)."""
    grid = load_workflow(workflow).grid
    rundir.create()
    window = scene_window(grid, size)
    scene = DemoScene(window, rundir.root / "demo-region.geojson",
                      rundir.root / "demo-truth.tif")
    if scene.truth_file.exists() and rundir.input.exists():
        return scene
    rgb, labels = make_scene(window.height, window.width, DEMO_SEED)
    image = stores.create_store(rundir.input, grid, "input", bands=3,
                                attrs={"sinolc_source": "sinolc-dist synthetic demo scene"})
    stores.write_window(image, window, np.maximum(rgb, 1))  # 0 is the store's nodata
    # The footprint, 1 px inside the scene so neighbours that only touch it are not selected.
    left, bottom, right, top = grid.window_bounds(window)
    inset = grid.resolution
    box = shapely.segmentize(shapely.box(left + inset, bottom + inset, right - inset, top - inset),
                             grid.resolution * 64)
    to_lonlat = Transformer.from_crs(grid.crs, LONLAT, always_xy=True)
    footprint = shapely.transform(box, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
    scene.region_file.write_text(json.dumps(
        {"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"name": "sinolc-dist demo scene"},
             "geometry": shapely.geometry.mapping(footprint)}]}
    ))
    profile = {
        "driver": "GTiff", "width": window.width, "height": window.height, "count": 1,
        "dtype": "uint8", "crs": grid.pyproj_crs, "transform": grid.window_transform(window),
        "nodata": 0, "tiled": True, "compress": "deflate",
    }
    with rasterio.open(scene.truth_file, "w", **profile) as dst:
        dst.write(labels, 1)
        dst.write_colormap(1, SINOLC.colormap())
    return scene


def demo_accuracy(rundir: RunDir, scene: DemoScene) -> float:
    """Overall accuracy of the output store against the synthetic truth."""
    grid = rundir.read_config().grid
    predicted = stores.read_window(stores.open_array(rundir.output, grid), scene.window)
    with rasterio.open(scene.truth_file) as src:
        truth = src.read(1)
    return float((predicted == truth).mean())
