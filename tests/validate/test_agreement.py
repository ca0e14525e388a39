"""The agreement map: blocks written into a stage, a valid COG in the end, nothing left on failure."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import hubei_grid
from rio_cogeo.cogeo import cog_validate

from sinolc_dist.grid import Window
from sinolc_dist.validate.agreement import AGREEMENT_COLOURS, AgreementWriter


def test_blocks_clipped_to_the_extent_make_a_cog(tmp_path):
    grid = hubei_grid()
    extent = Window(64, 0, 256, 256)
    with AgreementWriter(tmp_path / "a.tif", grid, extent) as out:
        out.write(Window(0, 0, 128, 128), np.full((128, 128), 1, np.uint8))  # its top half is outside
        out.write(Window(128, 128, 256, 256), np.full((128, 128), 2, np.uint8))
    assert cog_validate(str(tmp_path / "a.tif"))[0] and not list(tmp_path.glob(".*"))
    with rasterio.open(tmp_path / "a.tif") as src:
        data = src.read(1)
        assert src.transform == grid.window_transform(extent) and src.colormap(1)[2] == AGREEMENT_COLOURS[2]
    assert (data == 1).sum() == 64 * 128 and (data == 2).sum() == 128 * 128 and data.shape == (192, 256)


def test_a_failure_leaves_no_map_and_no_stage(tmp_path):
    with pytest.raises(RuntimeError), AgreementWriter(tmp_path / "a.tif", hubei_grid(), Window(0, 0, 64, 64)):
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())
