"""COG overviews: the 2 x 2 class mode, and overview files a VRT declares."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine

from sinolc_dist.deliver.pyramid import Pyramid, mode2
from sinolc_dist.legend import NODATA


def _brute_mode(block: np.ndarray) -> int:
    """The most frequent non-zero value, the first in row-major order on a tie; 0 if none."""
    values = [int(v) for v in block.ravel() if v]
    return max(values, key=lambda v: (values.count(v), -values.index(v))) if values else 0


def _brute_level(data: np.ndarray) -> np.ndarray:
    h, w = -(-data.shape[0] // 2), -(-data.shape[1] // 2)
    return np.array([[_brute_mode(data[2 * i:2 * i + 2, 2 * j:2 * j + 2]) for j in range(w)]
                     for i in range(h)], np.uint8)


def test_mode2_against_brute_force():
    rng = np.random.default_rng(4)
    data = rng.choice(np.array([0, 0, 3, 5, 9], np.uint8), size=(41, 37))
    got = mode2(data)
    assert got.shape == (21, 19)
    for i in range(21):
        for j in range(19):
            assert got[i, j] == _brute_mode(data[2 * i:2 * i + 2, 2 * j:2 * j + 2]), (i, j)


@pytest.mark.parametrize(("block", "mode"), [
    ([[0, 0], [0, 0]], NODATA),  # nodata only where all four are
    ([[0, 0], [0, 7]], 7),  # one valid pixel keeps the edge of a province
    ([[3, 5], [5, 3]], 3),  # a tie: the first in row-major order
    ([[3, 5], [9, 9]], 9),  # a pair beats singles, wherever it lies
    ([[0, 4], [4, 0]], 4),
])
def test_mode2_of_one_block(block, mode):
    assert mode2(np.array(block, np.uint8)).tolist() == [[mode]]


def _profile(width: int, height: int) -> dict:
    return {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8",
            "crs": "EPSG:3857", "transform": Affine(2.0, 0, 1000.0, 0, -2.0, 5000.0), "nodata": NODATA,
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "ZSTD"}


def test_pyramid_writes_each_level_from_pieces_and_a_vrt_declares_them(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.choice(np.array([0, 1, 2, 9], np.uint8), size=(700, 530))
    stage, profile = tmp_path / "stage.tif", _profile(530, 700)
    with rasterio.open(stage, "w", **profile) as out, Pyramid(stage, profile, [2, 4]) as pyramid:
        out.update_tags(PROVINCE="Test")
        for row in range(0, 700, 256):  # pieces from multiples of the largest factor
            for col in range(0, 530, 256):
                piece = data[row:row + 256, col:col + 256]
                out.write(piece, 1, window=((row, row + piece.shape[0]), (col, col + piece.shape[1])))
                pyramid.add(row, col, piece)
    assert [p.name for p in pyramid.paths] == ["stage.tif.ovr2.tif", "stage.tif.ovr4.tif"]
    level1, level2 = _brute_level(data), _brute_level(_brute_level(data))
    for path, expected, factor in zip(pyramid.paths, (level1, level2), (2, 4), strict=True):
        with rasterio.open(path) as src:
            assert (src.height, src.width) == expected.shape == (-(-700 // factor), -(-530 // factor))
            assert src.transform == profile["transform"] @ Affine.scale(factor)
            np.testing.assert_array_equal(src.read(1), expected)
    vrt = pyramid.vrt(tmp_path / "stage.vrt")
    with rasterio.open(vrt) as src:
        assert src.overviews(1) == [2, 4] and src.tags()["PROVINCE"] == "Test"
        np.testing.assert_array_equal(src.read(1), data)
        np.testing.assert_array_equal(src.read(1, out_shape=level1.shape), level1)  # served by the level


def test_pyramid_without_factors_writes_nothing(tmp_path):
    stage, profile = tmp_path / "stage.tif", _profile(64, 64)
    with Pyramid(stage, profile, []) as pyramid:
        pyramid.add(0, 0, np.ones((64, 64), np.uint8))
    assert pyramid.paths == [] and list(tmp_path.iterdir()) == []


def test_a_hollow_vrt_reads_nodata_and_copies_to_the_same_empty_cog(tmp_path):
    stage, profile = tmp_path / "stage.tif", _profile(3000, 2200)
    with rasterio.open(stage, "w", **profile) as out, Pyramid(stage, profile, [2, 4]) as pyramid:
        out.update_tags(PROVINCE="Test")
    hollow = pyramid.vrt(tmp_path / "hollow.vrt", hollow=True)
    assert "Source>" not in hollow.read_text().replace("SourceFilename>", "").replace("SourceBand>", "")
    with rasterio.open(hollow) as src:
        assert src.overviews(1) == [2, 4] and src.tags()["PROVINCE"] == "Test"
        assert not src.read(1).any() and not src.read(1, out_shape=(750, 550)).any()
    cogs = []
    for source in (pyramid.vrt(tmp_path / "full.vrt"), hollow):
        cogs.append(tmp_path / f"{source.stem}.cog.tif")
        rasterio.shutil.copy(source, cogs[-1], driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
                             SPARSE_OK=True, OVERVIEWS="FORCE_USE_EXISTING")
    assert cogs[0].read_bytes() == cogs[1].read_bytes()
