"""The national VRT over provincial COGs: read back with GDAL, it equals the files pasted together."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sinolc_dist.deliver.vrt import write_vrt
from sinolc_dist.errors import InputError
from sinolc_dist.legend import SINOLC


def _tile(path, left: float, top: float, data: np.ndarray, crs: str = "EPSG:3857"):
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": "uint8", "crs": crs, "transform": from_origin(left, top, 2.0, 2.0), "nodata": 0,
               "tiled": True, "blockxsize": 16, "blockysize": 16}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def test_two_overlapping_provinces_read_back_as_one_raster(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(1, 12, (32, 48), dtype=np.uint8)
    b = rng.integers(1, 12, (32, 32), dtype=np.uint8)
    a[:, 32:] = 0  # outside province a's polygon: nodata, so b shows through where they overlap
    files = [_tile(tmp_path / "a.tif", 100.0, 500.0, a), _tile(tmp_path / "b.tif", 164.0, 468.0, b)]
    (tmp_path / "mosaics").mkdir()
    vrt = write_vrt(files, tmp_path / "mosaics" / "china.vrt", SINOLC)
    expected = np.zeros((48, 64), np.uint8)
    expected[16:, 32:] = b
    expected[:32, :48] = np.where(a > 0, a, expected[:32, :48])
    with rasterio.open(vrt) as src:
        assert (src.width, src.height) == (64, 48) and src.crs.to_epsg() == 3857
        assert src.transform == from_origin(100.0, 500.0, 2.0, 2.0)
        np.testing.assert_array_equal(src.read(1), expected)
        assert src.colormap(1)[2] == (*SINOLC.colours()[2], 255)
        assert json.loads(src.tags()["CLASS_NAMES"])["9"] == "Water"
    assert "../a.tif" in vrt.read_text()  # relative: the folders move together


def test_vrt_refuses_files_off_the_lattice(tmp_path):
    data = np.ones((16, 16), np.uint8)
    files = [_tile(tmp_path / "a.tif", 0.0, 100.0, data), _tile(tmp_path / "b.tif", 33.0, 100.0, data)]
    with pytest.raises(InputError, match="not aligned"):
        write_vrt(files, tmp_path / "x.vrt")
    assert not (tmp_path / "x.vrt").exists()


def test_vrt_refuses_files_in_another_crs(tmp_path):
    data = np.ones((16, 16), np.uint8)
    files = [_tile(tmp_path / "a.tif", 0.0, 100.0, data), _tile(tmp_path / "b.tif", 32.0, 100.0, data,
                                                                   crs="EPSG:32650")]
    with pytest.raises(InputError, match="same --crs"):
        write_vrt(files, tmp_path / "x.vrt")
