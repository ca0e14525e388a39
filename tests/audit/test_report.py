"""``audit`` on files: strips on both axes and seams in one pass; our own COG is clean."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import duplicate, land_cover, write_map

from sinolc_dist.audit.report import audit
from sinolc_dist.deliver.cog import write_cog
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import CHINA_ALBERS, Grid
from sinolc_dist.rundir.stores import create_store, write_window


def test_a_file_with_a_column_and_a_row_strip(tmp_path):
    image = duplicate(duplicate(land_cover(900, 1100, 1), 1, 700, 300, 0.02), 0, 500, 268, 0.01)
    write_map(tmp_path / "m.tif", image)
    report = audit(tmp_path / "m.tif", map_path=tmp_path / "m.png")
    assert [(s.axis, s.start, s.width) for s in report.strips] == [("columns", 700, 300), ("rows", 500, 268)]
    assert report.seams == [] and report.tile == 256 and report.findings == 2
    assert (report.width, report.height) == (1400, 1168)
    data = json.loads(json.dumps(report.to_dict()))
    first = report.strips[0]
    assert data["strips"][0] == {"axis": "columns", "start": 700, "width": 300, "end": 1000,
                                 "similarity": first.similarity, "outside": first.outside}
    assert data["map"] == str(tmp_path / "m.png") and (tmp_path / "m.png").stat().st_size > 1000
    assert report.table()[0][:4] == ("strip", "columns", "[700, 1000)", "300 px")


def test_seams_against_the_files_tiles_or_a_given_tile(tmp_path):
    ground = land_cover(740, 940, 3)
    image = ground[20:720, 20:920].copy()
    image[256:384, 384:512] = ground[20 + 260:20 + 388, 20 + 384:20 + 512]  # stitched 4 px off
    write_map(tmp_path / "m.tif", image, tile=128)
    assert {(s.position, s.shift) for s in audit(tmp_path / "m.tif").seams} == {(384, -4), (512, 4)}
    write_map(tmp_path / "big-tiles.tif", image, tile=512)
    assert audit(tmp_path / "big-tiles.tif").seams == []  # the file's own grid misses the 128 px tiles
    assert len(audit(tmp_path / "big-tiles.tif", tile=128).seams) == 2
    write_map(tmp_path / "striped.tif", image, tiled=False, blockxsize=None, blockysize=None)
    assert audit(tmp_path / "striped.tif").tile is None  # a striped file has no tile grid of its own


def test_our_own_cog_passes_audit_with_zero_findings(tmp_path):
    grid = Grid(crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0), size=(1300, 1500),
                chunk=512, block=256, shard=2, halo=16)
    store = create_store(tmp_path / "output.zarr", grid, "output")
    write_window(store, grid.full_window, land_cover(1300, 1500, 11))
    cog = write_cog(tmp_path / "province.tif", grid, store, grid.full_window)
    report = audit(cog.path, tile=256)
    assert report.findings == 0, report.to_dict()
    assert report.tile == 256


def test_bad_options_are_config_errors(tmp_path):
    write_map(tmp_path / "m.tif", land_cover(64, 64, 1))
    with pytest.raises(ConfigError, match="--min-width 2 is too small"):
        audit(tmp_path / "m.tif", min_width=2)
    with pytest.raises(ConfigError, match="--tile 8 is too small"):
        audit(tmp_path / "m.tif", tile=8)


def test_a_small_file_with_nodata_everywhere_is_clean(tmp_path):
    write_map(tmp_path / "empty.tif", np.zeros((300, 400), np.uint8))
    assert audit(tmp_path / "empty.tif").findings == 0
