"""Synthetic land-cover class maps (fields, roads, water, buildings; not noise) and strip injection."""

from __future__ import annotations

import numpy as np


def land_cover(height: int, width: int, seed: int, field: tuple[int, int] = (18, 60)) -> np.ndarray:
    """A patterned class map: rotated field parcels, water bodies, roads and building blocks (codes 1..11)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u, v = x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)
    a, b = rng.uniform(*field, size=2)
    parcel = (np.floor(u / a).astype(np.int64) * 7919 + np.floor(v / b).astype(np.int64) * 104729) % 1_000_003
    out = np.array([2, 3, 4, 5, 5, 7, 10], np.uint8)[(parcel * 2654435761 >> 7) % 7]
    for _ in range(rng.integers(2, 5)):  # water bodies with wavy shores
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(4, max(5.0, 0.15 * max(height, width)))
        ang = np.arctan2(y - cy, x - cx)
        shore = r * (1 + 0.2 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.1 * np.sin(7 * ang))
        out[np.hypot(y - cy, x - cx) < shore] = 9
    for _ in range(rng.integers(3, 7)):  # straight roads, 2-3 px wide
        t = rng.uniform(0, np.pi)
        d = (x - rng.uniform(0, width)) * np.sin(t) - (y - rng.uniform(0, height)) * np.cos(t)
        out[np.abs(d) < rng.uniform(1, 1.6)] = 1
    for _ in range(rng.integers(2, 5)):  # villages: clustered small buildings
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        for _ in range(40):
            by, bx = cy + int(rng.normal(0, 25)), cx + int(rng.normal(0, 25))
            out[max(0, by):max(0, by + rng.integers(3, 9)), max(0, bx):max(0, bx + rng.integers(3, 9))] = 6
    return out


def duplicate(image: np.ndarray, axis: int, start: int, width: int, changed: float = 0.0,
              seed: int = 0) -> np.ndarray:
    """``image`` with lines ``[start - width, start)`` repeated at ``start`` along ``axis`` (0: rows).

    A share ``changed`` of the copy's pixels get another class, as neighbouring
    tiles' inference differs.  The result is ``width`` lines longer.
    """
    copy = np.take(image, np.arange(start - width, start), axis=axis).copy()
    if changed:
        rng = np.random.default_rng(seed)
        hit = (rng.random(copy.shape) < changed) & (copy != 0)  # nodata stays nodata
        copy[hit] = (copy[hit] % 11) + 1
    return np.concatenate([np.take(image, np.arange(start), axis=axis), copy,
                           np.take(image, np.arange(start, image.shape[axis]), axis=axis)], axis=axis)


def clean_maps(height: int = 700, width: int = 900) -> dict[str, np.ndarray]:
    """Ten maps without any duplicated strip: strong periodic patterns, large uniform and nodata areas."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(42)
    tile = land_cover(48, 40, 3, field=(6, 14))
    lake = land_cover(height, width, 5)
    lake[:, width // 3:] = 9  # a lake over two thirds of the map, full height
    desert = land_cover(height, width, 6)
    desert[(x - 0.3 * y) > 200] = 7
    outside = land_cover(height, width, 7)
    outside[np.hypot((y - height / 2) / height, (x - width / 2) / width) > 0.3] = 0  # a province outline
    half = land_cover(height, width, 8)
    half[:, : width // 2] = 0
    noisy = np.tile(tile, (-(-height // 48), -(-width // 40)))[:height, :width].copy()
    hit = rng.random(noisy.shape) < 0.02
    noisy[hit] = rng.integers(1, 12, size=int(hit.sum()))
    return {
        "fields": land_cover(height, width, 9),
        "crop rows": np.array([5, 5, 5, 2, 2, 4, 4], np.uint8)[x % 7],
        "regular parcels": np.tile(tile, (-(-height // 48), -(-width // 40)))[:height, :width],
        "regular parcels, 2 % noise": noisy,
        "diagonal terraces": np.array([2, 3, 4, 5, 10], np.uint8)[((x + 2 * y) // 9) % 5],
        "lake": lake,
        "desert": desert,
        "province outline": outside,
        "half nodata": half,
        "one class": np.full((height, width), 7, np.uint8),
    }


RAT_XML = """<PAMDataset>
  <PAMRasterBand band="1">
    <GDALRasterAttributeTable tableType="thematic">
      <FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage></FieldDefn>
      <FieldDefn index="1"><Name>Class</Name><Type>2</Type><Usage>2</Usage></FieldDefn>
      <Row index="0"><F>1</F><F>Traffic route</F></Row>
      <Row index="1"><F>9</F><F>Water</F></Row>
    </GDALRasterAttributeTable>
  </PAMRasterBand>
</PAMDataset>
"""


def write_map(path, image: np.ndarray, tile: int = 256, rat: bool = False, **profile) -> None:
    """Write ``image`` as a tiled DEFLATE GeoTIFF in UTM 50N, with SinoLC-1's colours, tags and a band name.

    ``rat`` adds a raster attribute table the way GDAL keeps one for a GeoTIFF: in ``<file>.aux.xml``.
    """
    import rasterio
    from rasterio.transform import from_origin

    from sinolc_dist.legend import SINOLC

    height, width = image.shape[-2:]
    meta = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": image.dtype.name,
            "crs": "EPSG:32650", "transform": from_origin(500_000, 4_000_000, 1, 1), "nodata": 0,
            "tiled": True, "blockxsize": tile, "blockysize": tile, "compress": "deflate", **profile}
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(image.reshape(-1, height, width))
        if meta["count"] == 1 and image.dtype == np.uint8:
            dst.write_colormap(1, SINOLC.colormap())
        dst.update_tags(PROVINCE="Hubei")
        dst.update_tags(1, CLASS_9="Water")
        dst.set_band_description(1, "land-cover class")
    if rat:
        with open(f"{path}.aux.xml", "w", encoding="utf-8") as f:
            f.write(RAT_XML)
