from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from conftest import assert_valid_cog, fill_disk
from distributed import Client, LocalCluster

from sinolc_dist.deliver.cog import write_cog
from sinolc_dist.deliver.tiff import read_ifds
from sinolc_dist.deliver.tiled import STEP, submit_cog
from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import CHINA_ALBERS, ChunkId, Grid, Window
from sinolc_dist.legend import SINOLC
from sinolc_dist.rundir.stores import create_store, open_array, read_window, write_window

GRID = Grid(
    crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0),
    size=(3000, 2500), chunk=512, block=256, shard=2, halo=16,
)
TAGS = {"SINOLC_PROVINCE": "990000 测试 Test", "SINOLC_COMPLETE": "yes"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """An output store with 8 px patches of codes 1..11 in most shards; shard (0, 1) stays empty."""
    path = tmp_path_factory.mktemp("store") / "output.zarr"
    arr = create_store(path, GRID, "output")
    rng = np.random.default_rng(7)
    rows, cols = (-(-n // GRID.shard_px) for n in GRID.size)
    for srow in range(rows):
        for scol in range(cols):
            if (srow, scol) != (0, 1):
                win = GRID.shard_window(ChunkId(srow, scol))
                patches = rng.integers(1, 12, size=(-(-win.height // 8), -(-win.width // 8)), dtype=np.uint8)
                write_window(arr, win, np.kron(patches, np.ones((8, 8), np.uint8))[:win.height, :win.width])
    return path


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _triangle(window: Window) -> shapely.Polygon:
    left, bottom, right, top = GRID.window_bounds(window)
    return shapely.Polygon([(left + 100.3, top - 50.7), (right - 80.1, top - 300.2),
                            (left + 700.9, bottom + 60.4)])


def _levels(path: Path, count: int) -> list[np.ndarray]:
    out = []
    with rasterio.open(path) as src:
        out.append(src.read(1))
    for level in range(count):
        with rasterio.open(path, OVERVIEW_LEVEL=level) as ovr:
            out.append(ovr.read(1))
    return out


@pytest.mark.parametrize(("window", "block_px", "tile", "rounds"), [
    # 2897 x 2395 px, 512 px tiles, overviews 2, 4, 8: 3 x 3 blocks of 1024 px, three rounds;
    # the triangle misses the top-right block.
    (Window(3, 5, 2900, 2400), 1024, 512, 3),
    # 1600 x 1024 px: 256 px tiles (rio-cogeo's tiling rule), overviews 2, 4; blocks of 512 px, two rounds.
    (Window(0, 0, 1600, 1024), 512, 256, 2),
])
def test_the_same_file_as_write_cog(store, client, tmp_path, window, block_px, tile, rounds):
    mask = _triangle(window)
    ref = write_cog(tmp_path / "one" / "p.tif", GRID, open_array(store, GRID), window, mask_geometry=mask,
                    tags=TAGS)
    dst = tmp_path / "many" / "p.tif"
    future = submit_cog(client, dst, GRID, store, window, mask, TAGS, SINOLC, key_prefix="mosaic-990000",
                        block_px=block_px)
    report = future.result()
    assert future.done()

    blocks = [k for k in future.keys if "-block-" in k]
    across, down = -(-window.width // block_px), -(-window.height // block_px)
    assert 1 < len(blocks) < across * down  # several blocks, and one outside the polygon skipped
    assert max(int(k.split("-round")[1][0]) for k in future.keys if "-round" in k) == rounds
    assert all(k.startswith("mosaic-990000-") for k in future.keys)
    assert dst.read_bytes() == ref.path.read_bytes()  # byte for byte
    assert report.sha256 == ref.sha256 == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert (report.path, report.width, report.height, report.bytes, report.overviews, report.class_km2) == (
        dst, ref.width, ref.height, ref.bytes, ref.overviews, ref.class_km2)
    with rasterio.open(dst) as src:
        assert src.block_shapes == [(tile, tile)]
        assert src.tags()["SINOLC_PROVINCE"] == TAGS["SINOLC_PROVINCE"]
    for ours, theirs in zip(_levels(dst, len(ref.overviews)), _levels(ref.path, len(ref.overviews)),
                            strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert_valid_cog(dst)
    assert os.listdir(dst.parent) == ["p.tif"]  # no part, stage or partial file


def test_bad_arguments_are_config_errors(store, client, tmp_path):
    window = Window(0, 0, 1024, 1024)
    for bad in (768, 512 * 3, 256):
        with pytest.raises(ConfigError, match=f"block_px {bad} must be the COG's tile side"):
            submit_cog(client, tmp_path / "p.tif", GRID, store, window, None, block_px=bad)
    with pytest.raises(ConfigError, match="does not overlap the grid"):
        submit_cog(client, tmp_path / "p.tif", GRID, store, Window(5000, 0, 6000, 512), None)
    with pytest.raises(ConfigError, match="Polygon"):
        submit_cog(client, tmp_path / "p.tif", GRID, store, window, shapely.Point(1_000_100.0, 3_499_900.0))
    assert list(tmp_path.iterdir()) == []


def test_empty_space_costs_nothing(client, tmp_path):
    """A 100k x 100k px window with land in one corner: one block task, and seconds for the whole file."""
    grid = Grid(crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0),
                size=(100_000, 100_000), chunk=4096, block=512, shard=1, halo=16)
    path = tmp_path / "huge.zarr"
    arr = create_store(path, grid, "output")
    land = np.random.default_rng(1).integers(1, 12, size=(512, 512), dtype=np.uint8)
    write_window(arr, grid.chunk_window(ChunkId(0, 0)), np.kron(land, np.ones((8, 8), np.uint8)))
    corner = shapely.box(1_000_000.0 + 500, 3_500_000.0 - 3000, 1_000_000.0 + 3000, 3_500_000.0 - 700)
    start = time.perf_counter()
    future = submit_cog(client, tmp_path / "out" / "huge.tif", grid, path, grid.full_window, corner)
    report = future.result()
    seconds = time.perf_counter() - start
    blocks = [k for k in future.keys if "-block-" in k]
    assert len(blocks) == 1 and blocks[0].endswith("-block-0-0")  # of 13 x 13
    assert (report.width, report.height, report.overviews[-1]) == (100_000, 100_000, 256)
    assert seconds < 60, seconds  # about 10 s here, nearly all of it GDAL's empty COG
    cols, rows = np.meshgrid(np.arange(4096) + 0.5, np.arange(4096) + 0.5)
    inside = shapely.contains_xy(corner, 1_000_000.0 + cols, 3_500_000.0 - rows)
    with rasterio.open(report.path) as src:
        corner_px = src.read(1, window=((0, 4096), (0, 4096)))
    np.testing.assert_array_equal(corner_px, np.where(inside, read_window(arr, Window(0, 0, 4096, 4096)), 0))
    level0 = read_ifds(report.path)[0]
    with open(report.path, "rb") as f:
        written = np.count_nonzero(level0.counts.read(f))
    assert written == corner_px.reshape(8, 512, 8, 512).any(axis=(1, 3)).sum() == 30  # of 38,416 tiles
    assert report.bytes < 2e6


def test_a_full_disk_gives_one_error_and_leaves_nothing(store, client, tmp_path, tmpfs):
    """Room for the blocks' parts but not for the file, or not even for the parts: one clear error."""
    window = Window(0, 0, 1536, 1536)
    ref = write_cog(tmp_path / "p.tif", GRID, open_array(store, GRID), window)
    outcomes = []
    for leave in (ref.bytes * k // 2 for k in (0, 1, 2, 3, 4, 6, 8, 12)):
        (tmpfs / "filler").unlink(missing_ok=True)
        fill_disk(tmpfs, leave=leave)
        dst = tmpfs / "mosaics" / "p.tif"
        try:
            report = submit_cog(client, dst, GRID, store, window, None, block_px=1024).result()
        except InputError as exc:
            message = str(exc)
            assert message.startswith(f"writing {dst} failed (") and "nothing was left" in message, message
            assert list(dst.parent.iterdir()) == []
            outcomes.append("error")
            continue
        assert report.path.read_bytes() == ref.path.read_bytes()
        assert os.listdir(dst.parent) == ["p.tif"]
        dst.unlink()
        outcomes.append("written")
    assert outcomes[0] == "error" and outcomes[-1] == "written", outcomes


def test_a_cluster_gone_mid_write_leaves_no_file_and_a_new_attempt_finishes(store, tmp_path):
    window, dst = Window(0, 0, 2048, 2048), tmp_path / "m" / "p.tif"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as gone:
        future = submit_cog(gone, dst, GRID, store, window, None, block_px=1024)
        first = future.keys
    # The driver and its cluster ended before the assembly: no file under the final name, no partial.
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if "partial" in p.name]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as again:
        future = submit_cog(again, dst, GRID, store, window, None, block_px=1024)
        assert not set(first) & set(future.keys)  # keys unique per attempt
        future.result()
    assert os.listdir(dst.parent) == ["p.tif"]  # the forgotten attempt's parts removed too
    assert_valid_cog(dst)


def test_default_blocks_are_tile_times_step(store, client, tmp_path):
    window = Window(0, 0, 3000, 2500)
    future = submit_cog(client, tmp_path / "p.tif", GRID, store, window, None)
    blocks = [k for k in future.keys if "-block-" in k]
    assert len(blocks) == 1 and blocks[0].endswith("-block-0-0")  # one 8192 px block
    assert STEP == 16
    assert future.result().overviews == [2, 4, 8]


def test_a_geographic_grid_gets_the_same_pixels(client, tmp_path):
    """On EPSG:4326 the areas are added in km² (their last digits may differ), the pixels are the same."""
    grid = Grid(crs="EPSG:4326", resolution=8.983152841195214e-06, origin=(110.0, 30.0), size=(1500, 1400),
                chunk=256, block=128, shard=2, halo=8)
    path = tmp_path / "lonlat.zarr"
    arr = create_store(path, grid, "output")
    patches = np.random.default_rng(8).integers(1, 12, size=(188, 175), dtype=np.uint8)
    write_window(arr, grid.full_window, np.kron(patches, np.ones((8, 8), np.uint8))[:1500, :1400])
    window = Window(11, 7, 1500, 1391)
    ref = write_cog(tmp_path / "one.tif", grid, arr, window)
    report = submit_cog(client, tmp_path / "many.tif", grid, path, window, None, block_px=1024).result()
    assert report.overviews == ref.overviews == [2, 4]
    # Each row's pixel area comes from projected corners, of other pieces here: 3e-11 apart.
    assert report.class_km2 == pytest.approx(ref.class_km2, rel=1e-9)
    for ours, theirs in zip(_levels(report.path, 2), _levels(ref.path, 2), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert_valid_cog(report.path)
