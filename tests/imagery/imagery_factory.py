"""Test imagery near Wuhan on a small Albers grid, and an independent reference composite.

The grid (1024 x 1024 m, 256 px chunks, 2x2 chunks per shard) straddles 114°E,
the boundary of UTM zones 49 and 50.  Scenes (grid pixel windows, approximate:
each is a north-up raster in its own CRS covering that window):

- ``a_utm49.tif``   EPSG:32649, 0.9 m, uint8 RGB, TIFFTAG_DATETIME 2019      rows 0-700,   cols 0-600
- ``b_utm50.tif``   EPSG:32650, 1.1 m, uint8 RGB, ACQUISITION_DATE 2021,
                    internal mask with a hole                                rows 0-700,   cols 450-1024
- ``c_lonlat.tif``  EPSG:4326, uint8 RGBA (alpha 0 on its west half, valid
                    black pixels), ACQUISITION_DATE 2023 (newest)            rows 300-550, cols 300-800
- ``d_uint16.tif``  EPSG:32650, 1 m, uint16 RGB, undated                     rows 650-1024, cols 0-500
- ``tiles/17/x/y.png``  web-map tiles (EPSG:3857), one with alpha            around rows 780-980, cols 640-940

Rows 700-780 east of col 500 and the south-east corner stay uncovered: the gap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject, transform_bounds

from sinolc_dist.grid import CHINA_ALBERS, Grid, Window
from sinolc_dist.imagery.index import kernel_scale

WEB_HALF = 20037508.342789244
ZOOM = 17


def wuhan_grid() -> Grid:
    to_grid = Transformer.from_crs("EPSG:4326", CHINA_ALBERS, always_xy=True)
    x, y = to_grid.transform(114.0, 30.5)
    origin = (round(x / 512) * 512 - 512.0, round(y / 512) * 512 + 512.0)
    return Grid(crs=CHINA_ALBERS, origin=origin, size=(1024, 1024), chunk=256, block=128, shard=2, halo=16)


GRID = wuhan_grid()
REGION = "bbox:113.9985,30.4975,114.0065,30.5050"  # inside the grid, in Hubei


def workflow_yaml(path: Path, checkpoint: str = "demo", retries: int = 1) -> Path:
    g = GRID
    path.write_text(
        f"grid: {{crs: china-albers, resolution: 1.0, origin: [{g.origin[0]}, {g.origin[1]}], "
        f"size: [{g.size[0]}, {g.size[1]}], chunk: {g.chunk}, block: {g.block}, shard: {g.shard}, "
        f"halo: {g.halo}}}\nmodel: {{checkpoint: {checkpoint}, patch: 256, device: cpu}}\n"
        f"run: {{retries: {retries}, max_in_flight: 4}}\n"
    )
    return path


def cluster_yaml(path: Path) -> Path:
    path.write_text("local: {n_workers: 1, threads_per_worker: 2, processes: false, protocol: \"tcp://\"}\n")
    return path


@dataclass
class Scene:
    path: Path
    data: np.ndarray  # (bands, h, w) as written
    valid: np.ndarray  # (h, w) bool: the dataset mask
    transform: Affine
    crs: str


def pattern(bands: int, h: int, w: int, seed: int, dtype: str = "uint8") -> np.ndarray:
    """Blocky texture with noise, so resampling kernels see edges and gradients."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == "uint16" else 255
    base = rng.integers(1, top, size=(bands, h // 8 + 1, w // 8 + 1)).repeat(8, 1).repeat(8, 2)[:, :h, :w]
    noise = rng.integers(-top // 20, top // 20, size=base.shape)
    return np.clip(base + noise, 1, top).astype(dtype)


def write_scene(path: Path, crs: str, win: Window, res: float, seed: int, *, dtype: str = "uint8",
                tags: dict | None = None, alpha: bool = False, hole: bool = False) -> Scene:
    left, bottom, right, top = transform_bounds(GRID.crs, crs, *GRID.window_bounds(win), densify_pts=21)
    w, h = int(np.ceil((right - left) / res)), int(np.ceil((top - bottom) / res))
    transform = Affine(res, 0, left, 0, -res, top)
    data = pattern(3, h, w, seed, dtype)
    valid = np.ones((h, w), bool)
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 4 if alpha else 3, "dtype": dtype,
               "crs": crs, "transform": transform, "tiled": True, "blockxsize": 128, "blockysize": 128}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, [1, 2, 3])
        if alpha:
            valid[:, : w // 2] = False
            data[:, h // 2: h // 2 + 20, w // 2 + 10: w // 2 + 30] = 0  # valid black pixels
            ds.write(data, [1, 2, 3])
            ds.write(valid.astype(np.uint8) * 255, 4)
            ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        if hole:
            valid[h // 3: h // 2, w // 3: w // 2] = False
            ds.write_mask(valid.astype(np.uint8) * 255)
        if tags:
            ds.update_tags(**tags)
    return Scene(path, data, valid, transform, crs)


def tile_transform(x: int, y: int, ts: int = 256) -> Affine:
    res = 2 * WEB_HALF / (ts * 2**ZOOM)
    return Affine(res, 0, -WEB_HALF + x * ts * res, 0, -res, WEB_HALF - y * ts * res)


def write_tiles(root: Path, win: Window, seed: int) -> Scene:
    """PNG tiles at zoom 17 covering ``win``; returns them pasted into one scene (for references)."""
    left, bottom, right, top = transform_bounds(GRID.crs, "EPSG:3857", *GRID.window_bounds(win),
                                                densify_pts=21)
    res = 2 * WEB_HALF / (256 * 2**ZOOM)
    x0, x1 = int((left + WEB_HALF) // (256 * res)), int((right + WEB_HALF) // (256 * res))
    y0, y1 = int((WEB_HALF - top) // (256 * res)), int((WEB_HALF - bottom) // (256 * res))
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    data = pattern(3, ny * 256, nx * 256, seed)
    valid = np.ones((ny * 256, nx * 256), bool)
    valid[:100, :120] = False  # the first tile is RGBA with a transparent corner
    for j in range(ny):
        for i in range(nx):
            tile = data[:, j * 256:(j + 1) * 256, i * 256:(i + 1) * 256]
            first = i == 0 and j == 0
            out = root / str(ZOOM) / str(x0 + i) / f"{y0 + j}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(out, "w", driver="PNG", width=256, height=256, count=4 if first else 3,
                                   dtype="uint8") as ds:
                    ds.write(tile, [1, 2, 3])
                    if first:
                        ds.write(valid[:256, :256].astype(np.uint8) * 255, 4)
    return Scene(root, data, valid, tile_transform(x0, y0), "EPSG:3857")


def standard_scenes(folder: Path, with_tiles: bool = True) -> list[Scene]:
    """The module docstring's scenes, in priority order under ``--order newest``."""
    folder.mkdir(parents=True, exist_ok=True)
    a = write_scene(folder / "a_utm49.tif", "EPSG:32649", Window(0, 0, 700, 600), 0.9, 1,
                    tags={"TIFFTAG_DATETIME": "2019:06:01 10:00:00"})
    b = write_scene(folder / "b_utm50.tif", "EPSG:32650", Window(0, 450, 700, 1024), 1.1, 2,
                    tags={"ACQUISITION_DATE": "2021-05-01"}, hole=True)
    c = write_scene(folder / "c_lonlat.tif", "EPSG:4326", Window(300, 300, 550, 800), 1e-5, 3,
                    tags={"ACQUISITION_DATE": "2023-03-01T00:00:00Z"}, alpha=True)
    d = write_scene(folder / "d_uint16.tif", "EPSG:32650", Window(650, 0, 1024, 500), 1.0, 4, dtype="uint16")
    scenes = [c, b, a, d]
    if with_tiles:
        scenes.append(write_tiles(folder.parent / "tiles", Window(900, 900, 1000, 1000), 5))
    return scenes


def as_uint8(scene: Scene) -> np.ndarray:
    return np.concatenate([scene.data.astype(np.uint8), (scene.valid * 255).astype(np.uint8)[None]])


def warped(scene: Scene, window: Window, resampling: str) -> tuple[np.ndarray, np.ndarray]:
    """``rasterio.warp.reproject`` of one whole file (or tile set) into a window: (uint8 bands, valid)."""
    h, w = scene.valid.shape
    xscale, yscale = kernel_scale(scene.crs, scene.transform, w / 2, h / 2, GRID)  # the index's fixed kernel
    dst = {"dst_transform": GRID.window_transform(window), "dst_crs": GRID.crs, "dst_alpha": 4,
           "resampling": Resampling[resampling], "XSCALE": repr(xscale), "YSCALE": repr(yscale)}
    if scene.crs == "EPSG:3857":  # the tile set, pasted into one array
        out = np.zeros((4, window.height, window.width), np.uint8)
        reproject(as_uint8(scene), out, src_transform=scene.transform, src_crs=scene.crs, src_alpha=4, **dst)
        return out[:3], out[3] > 0
    with rasterio.open(scene.path) as ds:
        out = np.zeros((4, window.height, window.width), ds.dtypes[0])
        reproject(rasterio.band(ds, [1, 2, 3]), out, src_alpha=4 if ds.count == 4 else 0, **dst)
    data = out[:3] // 256 if out.dtype == np.uint16 else out[:3]
    return data.astype(np.uint8), out[3] > 0


def reference(scenes: list[Scene], window: Window, resampling: str = "nearest") -> np.ndarray:
    """Each whole scene warped by rasterio into the window; first valid pixel wins; valid 0 → 1."""
    out = np.zeros((3, window.height, window.width), np.uint8)
    filled = np.zeros(out.shape[1:], bool)
    for s in scenes:
        data, valid = warped(s, window, resampling)
        take = valid & ~filled
        out[:, take] = data[:, take]
        filled |= take
    out[:, filled & ~out.any(axis=0)] = 1
    return out


def coverage(scenes: list[Scene], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Independent of GDAL: which pixel centres fall on a valid source pixel, and which are ambiguous.

    Ambiguous: a centre within 0.01 source px of a source pixel edge (GDAL's approximate
    transformer may land on either side).
    """
    rows, cols = np.mgrid[window.row0:window.row1, window.col0:window.col1] + 0.5
    x, y = GRID.transform @ (cols.ravel(), rows.ravel())
    covered = np.zeros(rows.size, bool)
    ambiguous = np.zeros(rows.size, bool)
    for s in scenes:
        sx, sy = Transformer.from_crs(GRID.crs, s.crs, always_xy=True).transform(x, y)
        c, r = ~s.transform @ (np.asarray(sx), np.asarray(sy))
        h, w = s.valid.shape
        inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        ok = np.zeros_like(inside)
        ok[inside] = s.valid[r[inside].astype(int), c[inside].astype(int)]
        near = (np.abs(c - np.round(c)) < 0.01) | (np.abs(r - np.round(r)) < 0.01)
        ambiguous |= near
        covered |= ok
    return covered.reshape(rows.shape), ambiguous.reshape(rows.shape)
