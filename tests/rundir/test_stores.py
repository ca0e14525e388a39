from __future__ import annotations

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from conftest import small_grid

from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir import stores


def test_store_opens_georeferenced_with_xarray(tmp_path):
    grid = small_grid()
    arr = stores.create_store(tmp_path / "in.zarr", grid, "input")
    assert arr.shape == (3, *grid.size)
    assert arr.chunks == (3, grid.block, grid.block)
    assert arr.shards == (3, grid.shard_px, grid.shard_px)
    w = grid.shard_window(ChunkId(1, 0))
    stores.write_window(arr, w, np.full((3, w.height, w.width), 7, np.uint8))
    ds = xr.open_zarr(tmp_path / "in.zarr", chunks=None, decode_coords="all", mask_and_scale=False)
    da = ds["image"]
    assert da.rio.crs == grid.pyproj_crs
    assert tuple(da.rio.transform()) == tuple(grid.transform)
    sub = da.isel(y=slice(w.row0, w.row1), x=slice(w.col0, w.col1))
    assert tuple(sub.rio.transform()) == tuple(grid.window_transform(w))
    assert (sub.values == 7).all()
    assert int(da.isel(y=0, x=0).max()) == 0  # unwritten shards read as nodata


def test_reopen_with_another_grid_is_refused(tmp_path):
    stores.create_store(tmp_path / "out.zarr", small_grid(), "output")
    with pytest.raises(InputError, match="another grid"):
        stores.open_array(tmp_path / "out.zarr", small_grid(chunk=128))
    with pytest.raises(InputError, match="does not exist"):
        stores.open_array(tmp_path / "missing.zarr")


def test_damaged_store_is_a_clear_error(tmp_path):
    stores.create_store(tmp_path / "out.zarr", small_grid(), "output")
    (tmp_path / "out.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(InputError, match="damaged"):
        stores.open_array(tmp_path / "out.zarr")
