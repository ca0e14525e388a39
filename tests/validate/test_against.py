"""validate --against: another raster on our grid, in another CRS and resolution, class maps, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from conftest import FakeRun
from distributed import Client, LocalCluster
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rio_cogeo.cogeo import cog_validate

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.legend import SINOLC
from sinolc_dist.validate.against import cluster_runner, validate_against, write_against_results
from sinolc_dist.validate.metrics import accuracy, confusion
from sinolc_dist.validate.runmap import STATUS_CODE, RunMap, validation_folder


def write_tif(path, data, crs, transform, nodata=0):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data, 1)
    return path


def done_mask(run: FakeRun) -> np.ndarray:
    rm = RunMap.open(run.rundir)
    return np.kron(rm.status == STATUS_CODE["done"], np.ones((64, 64), bool)).astype(bool)


def other_map(run: FakeRun) -> np.ndarray:
    """The truth with every 7th column of pixels changed to another class, and a no-data corner."""
    other = run.classes.copy()
    other[:, ::7] = other[:, ::7] % 5 + 1
    other[200:, :8] = 0
    return other


@pytest.mark.parametrize("resample", ["mode", "nearest"])
def test_a_map_on_our_grid_gives_the_pixel_by_pixel_figures(fake_run: FakeRun, tmp_path, resample):
    other = other_map(fake_run)
    path = write_tif(tmp_path / "other.tif", other, fake_run.grid.crs, fake_run.grid.transform)
    out = validation_folder(fake_run.rundir) / "against"
    result = validate_against(fake_run.rundir, path, out, resample=resample)
    used = done_mask(fake_run) & (fake_run.classes != 0) & (other != 0)
    expected = accuracy(confusion(fake_run.classes[used], other[used], SINOLC.codes), SINOLC.codes)
    assert result.scopes["national"].matrix.tolist() == expected.matrix.tolist()
    assert result.scopes["national"].oa == pytest.approx(expected.oa)
    assert result.scopes["420000"].matrix.tolist() == expected.matrix.tolist()
    assert result.km2["national"].sum() == pytest.approx(used.sum() * 4 / 1e6)
    assert result.skipped_px["their nodata"] == int((done_mask(fake_run) & (other == 0)).sum()) \
        or resample == "mode"
    assert cog_validate(str(result.agreement))[0]
    with rasterio.open(result.agreement) as src:
        assert src.driver == "GTiff" and src.profile["tiled"] and src.crs == fake_run.grid.pyproj_crs
        agree = src.read(1)
    assert (agree == 1).sum() == int(np.trace(expected.matrix))
    assert (agree == 2).sum() == int(expected.n - np.trace(expected.matrix))
    paths = write_against_results(out, result, SINOLC)
    assert {p.name for p in paths} >= {"agreement.tif", "crosstab_km2.csv", "confusion.png", "report.json"}
    doc = json.loads((out / "report.json").read_text())
    assert doc["scopes"]["national"]["oa"] == pytest.approx(expected.oa)


def test_a_coarser_map_in_another_crs_is_compared_on_its_grid(fake_run: FakeRun, tmp_path):
    # The truth itself, warped to UTM 49N at 6 m by mode: agreement stays high, areas add up.
    grid = fake_run.grid
    left, bottom, right, top = grid.window_bounds(grid.full_window)
    utm = "EPSG:32649"
    transform, width, height = calculate_default_transform(grid.crs, utm, 256, 256, left, bottom, right, top,
                                                           resolution=6.0)
    other = np.zeros((height, width), np.uint8)
    reproject(fake_run.classes, other, src_transform=grid.transform, src_crs=grid.crs,
              dst_transform=transform, dst_crs=utm, resampling=Resampling.mode, src_nodata=0, dst_nodata=0)
    path = write_tif(tmp_path / "utm.tif", other, utm, transform)
    result = validate_against(fake_run.rundir, path, tmp_path / "out")
    assert result.scopes["national"].oa > 0.8
    done_km2 = (12 * 64 * 64 - 4) * 4 / 1e6
    assert result.km2["national"].sum() == pytest.approx(done_km2, rel=0.1)
    with rasterio.open(result.agreement) as src:
        assert src.crs.to_epsg() == 32649 and src.res == pytest.approx((6.0, 6.0))


def test_a_class_map_translates_their_codes_and_unmapped_codes_are_counted(fake_run: FakeRun, tmp_path):
    theirs = (fake_run.classes * 10).astype(np.uint8)  # 10, 20, ... 50
    path = write_tif(tmp_path / "tens.tif", theirs, fake_run.grid.crs, fake_run.grid.transform)
    cmap = tmp_path / "tens.yaml"
    cmap.write_text("10: 1\n20: 2\n30: Shrubland\n40: 4\n")  # 50 left out
    result = validate_against(fake_run.rundir, path, tmp_path / "out", class_map=cmap, resample="nearest")
    assert result.scopes["national"].oa == 1.0
    fives = int((done_mask(fake_run) & (fake_run.classes == 5)).sum())
    assert result.skipped_px["unknown class"] == fives > 0
    cmap.write_text("forest: 2\n")
    with pytest.raises(ConfigError, match="'forest' is not a raster code"):
        validate_against(fake_run.rundir, path, tmp_path / "out", class_map=cmap)


def test_bad_maps_are_refused(fake_run: FakeRun, tmp_path):
    with pytest.raises(InputError, match="not found"):
        validate_against(fake_run.rundir, tmp_path / "none.tif", tmp_path / "out")
    (tmp_path / "junk.tif").write_text("not a tiff")
    with pytest.raises(InputError, match="is not a raster GDAL reads"):
        validate_against(fake_run.rundir, tmp_path / "junk.tif", tmp_path / "out")
    far = write_tif(tmp_path / "far.tif", np.ones((10, 10), np.uint8), "EPSG:4326",
                    rasterio.transform.from_origin(10.0, 50.0, 0.01, 0.01))
    with pytest.raises(InputError, match="does not overlap the run's done chunks"):
        validate_against(fake_run.rundir, far, tmp_path / "out")
    bare = write_tif(tmp_path / "bare.tif", np.ones((10, 10), np.uint8), None, rasterio.Affine.identity())
    with pytest.raises(InputError, match="has no CRS: georeference it"):
        validate_against(fake_run.rundir, bare, tmp_path / "out", resample="nearest")
    with pytest.raises(ConfigError, match="--resample 'cubic' is not one of mode, nearest"):
        validate_against(fake_run.rundir, far, tmp_path / "out", resample="cubic")


@pytest.mark.slow
def test_blocks_read_on_a_local_cluster_give_the_same_figures(fake_run: FakeRun, tmp_path):
    other = other_map(fake_run)
    path = write_tif(tmp_path / "other.tif", other, fake_run.grid.crs, fake_run.grid.transform)
    here = validate_against(fake_run.rundir, path, tmp_path / "here")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        there = validate_against(fake_run.rundir, path, tmp_path / "there", runner=cluster_runner(client, 3))
        assert len(client.run(lambda: 1)) == 2
    assert there.scopes["national"].matrix.tolist() == here.scopes["national"].matrix.tolist()
    with rasterio.open(here.agreement) as a, rasterio.open(there.agreement) as b:
        assert np.array_equal(a.read(1), b.read(1))
