from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from sinolc_dist.deliver.tiff import read_ifds
from sinolc_dist.errors import InputError

CORNER = Affine(1.0, 0.0, 1_000_000.0, 0.0, -1.0, 3_500_000.0)


def _tiled(path, big: bool, shape=(700, 1100), tile=256, overviews=(2, 4)):
    rng = np.random.default_rng(3)
    data = rng.integers(1, 12, size=shape, dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint8",
                       transform=CORNER, tiled=True, blockxsize=tile, blockysize=tile, compress="DEFLATE",
                       BIGTIFF="YES" if big else "NO") as out:
        out.write(data, 1)
    if overviews:
        with rasterio.open(path, "r+") as out:
            out.build_overviews(list(overviews))
    return data


@pytest.mark.parametrize("big", [False, True])
def test_ifds_match_gdal_and_patched_offsets_move_tiles(tmp_path, big):
    path = tmp_path / "t.tif"
    data = _tiled(path, big)
    assert path.read_bytes()[2] == (43 if big else 42)
    ifds = read_ifds(path)
    assert [(i.width, i.height, i.tile) for i in ifds] == [(1100, 700, (256, 256)), (550, 350, (256, 256)),
                                                          (275, 175, (256, 256))]
    assert (ifds[0].tiles_across, ifds[0].tiles_down, ifds[2].offsets.count) == (5, 3, 2)
    with rasterio.open(path) as src, open(path, "rb") as f:
        offsets, counts = ifds[0].offsets.read(f), ifds[0].counts.read(f)
        for i in range(ifds[0].tiles_down * ifds[0].tiles_across):
            y, x = divmod(i, ifds[0].tiles_across)
            assert offsets[i] == int(src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1))
            assert counts[i] == int(src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1))
    # Swap the first two tiles in the index: GDAL then reads each where the other was.
    swap = offsets.copy(), counts.copy()
    for array in swap:
        array[[0, 1]] = array[[1, 0]]
    with open(path, "r+b") as f:
        ifds[0].offsets.write(f, swap[0])
        ifds[0].counts.write(f, swap[1])
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1, window=((0, 256), (0, 256))), data[:256, 256:512])
        np.testing.assert_array_equal(src.read(1, window=((0, 256), (256, 512))), data[:256, :256])


def test_a_one_tile_level_is_patched_inside_its_entry(tmp_path):
    path = tmp_path / "one.tif"
    _tiled(path, big=False, shape=(200, 240), overviews=())
    (ifd,) = read_ifds(path)
    assert ifd.offsets.count == 1
    with open(path, "rb") as f:
        offset, size = int(ifd.offsets.read(f)[0]), int(ifd.counts.read(f)[0])
    raw = path.read_bytes()
    # The value sits in the entry itself: the 4 bytes there are the offset.
    assert int.from_bytes(raw[ifd.offsets.position:ifd.offsets.position + 4], "little") == offset
    moved = tmp_path / "moved.tif"
    moved.write_bytes(raw + raw[offset:offset + size])
    with open(moved, "r+b") as f:
        ifd.offsets.write(f, np.array([len(raw)]))
    with rasterio.open(path) as a, rasterio.open(moved) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_bad_files_and_values(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="not a TIFF"):
        read_ifds(tmp_path / "x.tif")
    with rasterio.open(tmp_path / "strips.tif", "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8", transform=CORNER) as out:
        out.write(np.ones((64, 64), np.uint8), 1)
    with pytest.raises(InputError, match="not a tiled TIFF"):
        read_ifds(tmp_path / "strips.tif")
    _tiled(tmp_path / "t.tif", big=False, overviews=())
    (ifd,) = read_ifds(tmp_path / "t.tif")
    with open(tmp_path / "t.tif", "r+b") as f, pytest.raises(ValueError, match="do not fit"):
        ifd.offsets.write(f, np.full(ifd.offsets.count, 1 << 33))
    with open(tmp_path / "t.tif", "r+b") as f, pytest.raises(ValueError, match="values for an array"):
        ifd.offsets.write(f, np.zeros(3))
