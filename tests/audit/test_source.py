"""What audit and repair accept: single-band integer class maps with a CRS; one streamed pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from synthetic import land_cover, write_map

from sinolc_dist.audit.source import band_rows, expand_vrts, open_map, spread, stream
from sinolc_dist.errors import InputError


class Keep:
    def __init__(self) -> None:
        self.bands: list[tuple[int, np.ndarray]] = []

    def add(self, row0: int, band: np.ndarray) -> None:
        self.bands.append((row0, band.copy()))


def test_a_class_map_streams_once_in_bands_of_whole_block_rows(tmp_path):
    image = land_cover(700, 300, 1)
    write_map(tmp_path / "m.tif", image, tile=128)
    keep = Keep()
    with open_map(tmp_path / "m.tif") as (src, info):
        assert (info.width, info.height, info.dtype, info.nodata) == (300, 700, "uint8", 0)
        assert info.block == (128, 128)
        assert band_rows(info) == 256
        stream(src, info, [keep])
    assert [row for row, _ in keep.bands] == [0, 256, 512]
    assert np.array_equal(np.concatenate([band for _, band in keep.bands]), image)


def test_a_multi_band_file_is_refused(tmp_path):
    write_map(tmp_path / "rgb.tif", np.ones((3, 64, 64), np.uint8), count=3)
    with pytest.raises(InputError, match=r"has 3 bands: .*single-band class map.*gdal_translate -b"):
        with open_map(tmp_path / "rgb.tif"):
            pass


def test_a_file_without_crs_is_refused(tmp_path):
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8") as dst:
        dst.write(np.ones((1, 64, 64), np.uint8))
    with pytest.raises(InputError, match=r"nocrs.tif has no CRS: .*gdal_edit.py -a_srs"):
        with open_map(tmp_path / "nocrs.tif"):
            pass


def test_a_float_raster_is_refused(tmp_path):
    write_map(tmp_path / "ndvi.tif", np.zeros((64, 64), np.float32), nodata=None)
    with pytest.raises(InputError, match=r"holds float32 values, not class codes"):
        with open_map(tmp_path / "ndvi.tif"):
            pass


def test_an_unreadable_or_missing_file_is_refused(tmp_path):
    (tmp_path / "notes.tif").write_text("not a raster")
    with pytest.raises(InputError, match=r"cannot read .*notes.tif .*GeoTIFF, COG or VRT"):
        with open_map(tmp_path / "notes.tif"):
            pass
    with pytest.raises(InputError, match=r"cannot read .*missing.tif"):
        with open_map(tmp_path / "missing.tif"):
            pass


def test_a_damaged_file_fails_with_the_rows_it_could_not_read(tmp_path):
    write_map(tmp_path / "m.tif", np.random.default_rng(0).integers(1, 12, (1024, 1024)).astype(np.uint8))
    data = bytearray((tmp_path / "m.tif").read_bytes())
    data[len(data) // 2:len(data) // 2 + 20_000] = np.random.default_rng(1).bytes(20_000)  # directory intact
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"cannot read rows \d+\.\.\d+ of .*bad.tif .*damaged or truncated"):
        with open_map(tmp_path / "bad.tif") as (src, info):
            stream(src, info, [Keep()])


def test_spread_indices():
    assert spread(5, 10).tolist() == [0, 1, 2, 3, 4]
    assert spread(1000, 3).tolist() == [0, 500, 999]


def test_a_vrt_is_audited_file_by_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "national.vrt").write_text(
        '<VRTDataset rasterXSize="2" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
        '<SimpleSource><SourceFilename relativeToVRT="1">a/p1.tif</SourceFilename></SimpleSource>'
        '<SimpleSource><SourceFilename relativeToVRT="0">/data/p2.tif</SourceFilename></SimpleSource>'
        '<SimpleSource><SourceFilename relativeToVRT="1">a/p1.tif</SourceFilename></SimpleSource>'
        '</VRTRasterBand></VRTDataset>')
    (tmp_path / "broken.vrt").write_text("<VRTDataset")
    assert expand_vrts([tmp_path / "x.tif", tmp_path / "national.vrt", tmp_path / "broken.vrt"]) == [
        tmp_path / "x.tif", tmp_path / "a" / "p1.tif", Path("/data/p2.tif"), tmp_path / "broken.vrt"]
