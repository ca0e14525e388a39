"""Streamed delivery: a run over three provinces releases each one's COG while inference goes on.

The region is a bbox of about 0.5 km² around the point where Hubei, Hunan and
Jiangxi meet, on the small test workflow's national grid (128 px chunks, one
chunk per shard, so about 36 tasks; 9 times more where the deliveries are timed),
with a synthetic scene written into the input store.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from conftest import CLUSTER, WORKFLOW, fill_disk
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate

from sinolc_dist.demo.scene import make_scene
from sinolc_dist.errors import ChunkFailures, SinolcError
from sinolc_dist.grid import LONLAT, ChunkId, Window
from sinolc_dist.regions.region import province_geometries, to_crs
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, StateStore
from sinolc_dist.rundir.stores import INPUT_ARRAY
from sinolc_dist.stages import infer
from sinolc_dist.stages.status import status, status_lines
from sinolc_dist.stages.workflow import load_workflow

TRIPLE = (113.94206, 29.047331)  # Hubei (420000), Hunan (430000) and Jiangxi (360000) meet here
CODES = ("360000", "420000", "430000")
HALF = 0.0032  # degrees: a bbox of about 0.65 x 0.7 km


def triple_run(tmp_path: Path, checkpoint: Path, order: str = "province",
               half: float = HALF) -> infer.RunRequest:
    """A run directory with imagery over the three provinces' meeting point (a bbox ±``half`` degrees)."""
    wf, cl = tmp_path / "small.yaml", tmp_path / "two.yaml"
    wf.write_text((WORKFLOW % checkpoint).replace("shard: 2", "shard: 1").replace("max_in_flight: 4",
                                                                                   "max_in_flight: 2"))
    cl.write_text(CLUSTER)
    grid = load_workflow(str(wf)).grid
    lon, lat = TRIPLE
    to_grid = Transformer.from_crs(LONLAT, grid.crs, always_xy=True)
    xs, ys = to_grid.transform([lon - half, lon + half, lon - half, lon + half],
                               [lat - half, lat - half, lat + half, lat + half])
    c = grid.chunk
    row0 = int((grid.origin[1] - max(ys)) // c - 1) * c
    col0 = int((min(xs) - grid.origin[0]) // c - 1) * c
    row1 = int((grid.origin[1] - min(ys)) // c + 2) * c
    col1 = int((max(xs) - grid.origin[0]) // c + 2) * c
    window = Window(row0, col0, row1, col1)
    rundir = RunDir(tmp_path / "run").create()
    rgb, _ = make_scene(window.height, window.width, 7)
    image = stores.create_store(rundir.input, grid, "input", bands=3)
    stores.write_window(image, window, np.maximum(rgb, 1))
    region = f"bbox:{lon - half},{lat - half},{lon + half},{lat + half}"
    return infer.RunRequest(rundir.root, region, str(wf), str(cl), order=order)


def log_times(rundir: RunDir, pattern: str) -> list[tuple[str, re.Match]]:
    """``(timestamp, match)`` of each driver-log line matching ``pattern``, in order."""
    out = []
    for line in (rundir.logs / "driver.log").read_text().splitlines():
        if found := re.search(pattern, line):
            out.append((line[:23], found))
    return out


def assert_delivered(rundir: RunDir, adcode: str) -> Path:
    """The province's COG is valid, read by GDAL's own tool, and equals the output store inside it."""
    grid = rundir.read_config().grid
    (path,) = rundir.mosaics.glob(f"{adcode}_*.tif")
    assert cog_validate(path, quiet=True)[0]
    gdal = subprocess.run(["gdalinfo", "-checksum", str(path)], capture_output=True, text=True)
    assert gdal.returncode == 0 and "Checksum=" in gdal.stdout, gdal.stderr
    with rasterio.open(path) as src:
        data, transform = src.read(1), src.transform
    col0, row0 = (round(v) for v in ~grid.transform @ (transform.c, transform.f))
    window = Window(row0, col0, row0 + data.shape[0], col0 + data.shape[1])
    store = stores.read_window(stores.open_array(rundir.output, grid), window)
    polygon = to_crs(province_geometries([adcode])[adcode], grid.crs)
    cols, rows = np.meshgrid(np.arange(data.shape[1]) + 0.5, np.arange(data.shape[0]) + 0.5)
    xs, ys = transform @ (cols, rows)
    inside = shapely.contains_xy(polygon, xs, ys)
    assert inside.any()
    np.testing.assert_array_equal(data, np.where(inside, store, 0))
    return path


@pytest.mark.slow
def test_provinces_are_delivered_one_after_another_while_inference_goes_on(tmp_path, random_checkpoint):
    req = triple_run(tmp_path, random_checkpoint, half=3 * HALF)  # ~200 chunks: seconds of inference left
    rundir = RunDir(req.run_dir)
    summary = infer.run(req)
    with StateStore(rundir.state) as state:
        counts = state.count()
        sizes = {code: sum(1 for _ in state.records(code)) for code in CODES}
    assert counts[DONE] == sum(counts.values()) and all(sizes.values()), counts
    chunk_times = [t for t, _ in log_times(rundir, r"chunk c/\d+/\d+ done on ")]
    delivered = log_times(rundir, r"province (\w+) \((\d{6})\) delivered: (\S+)")
    assert len(chunk_times) == counts[DONE]
    assert [m.group(2) for _, m in delivered][:1] == [min(CODES, key=lambda c: (sizes[c], c))]
    assert sorted(m.group(2) for _, m in delivered) == list(CODES)
    assert delivered[0][0] < max(chunk_times), "the first province waited for the whole run"
    for _, m in delivered:
        assert assert_delivered(rundir, m.group(2)) == Path(m.group(3))
    assert sorted(r.path.name[:6] for r in summary.mosaics) == list(CODES)
    assert (rundir.mosaics / "china.vrt").exists() and (rundir.mosaics / "catalog.json").exists()
    assert len(list(rundir.mosaics.glob("[0-9]*_*.json"))) == 3  # an item per province
    lines = status_lines(status(rundir.root))
    assert "provinces delivered: 3 of 3" in lines
    assert any(ln.strip().startswith("Jiangxi (360000): ") and ln.endswith("360000_Jiangxi.tif")
               for ln in lines)


@pytest.mark.slow
def test_a_province_with_a_failed_chunk_is_not_delivered_and_the_others_are(tmp_path, random_checkpoint):
    """The largest province starts (its first chunks done), then its last chunk fails for good."""
    req = triple_run(tmp_path, random_checkpoint)
    rundir = RunDir(req.run_dir)
    grid = load_workflow(req.workflow).grid
    largest: list[str] = []

    def corrupt_the_last_chunk_of_the_largest(summary) -> None:
        with StateStore(rundir.state) as state:
            records = list(state.records())
        sizes = {code: sum(code in r.provinces for r in records) for code in CODES}
        largest.append(max(CODES, key=lambda c: (sizes[c], c)))
        provinces = {r.chunk: r.provinces for r in records}

        def alone(cid) -> bool:  # its neighbours (whose halos read its imagery) are of that province only
            return all(provinces.get(ChunkId(cid.row + dr, cid.col + dc), (largest[0],)) == (largest[0],)
                       for dr in (-1, 0, 1) for dc in (-1, 0, 1))

        victim = max(c for c in provinces if alone(c))
        shard = rundir.input / INPUT_ARRAY / "c" / "0" / str(victim.row // grid.shard) / str(
            victim.col // grid.shard)
        shard.write_bytes(shard.read_bytes()[::-1])  # unreadable

    with pytest.raises(ChunkFailures):
        infer.run(req, on_start=corrupt_the_last_chunk_of_the_largest)
    with StateStore(rundir.state) as state:
        assert state.count()[FAILED] >= 1
        assert any(r.status == DONE for r in state.records(largest[0]))  # it had started
    assert not list(rundir.mosaics.glob(f"{largest[0]}_*.tif"))
    for code in set(CODES) - set(largest):
        assert_delivered(rundir, code)
    assert "provinces delivered: 2 of 3" in status_lines(status(rundir.root))
    assert "chunk(s) not done, mosaic skipped" in (rundir.logs / "driver.log").read_text()


@pytest.mark.slow
def test_a_driver_killed_while_delivering_leaves_no_half_file_and_the_resume_finishes(
        tmp_path, random_checkpoint):
    req = triple_run(tmp_path, random_checkpoint)
    rundir = RunDir(req.run_dir)
    args = [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "run", "--region", req.region,
            "--workflow", req.workflow, "--cluster", req.cluster, "--run-dir", str(req.run_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    log = rundir.logs / "driver.log"
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "COG started" in log.read_text():
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for path in rundir.mosaics.glob("*.tif"):  # under a final name only a whole COG
        assert cog_validate(path, quiet=True)[0], path
    infer.run(req)
    for code in CODES:
        assert_delivered(rundir, code)
    assert not [p for p in rundir.mosaics.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_a_disk_that_fills_during_delivery_is_one_error_and_loses_nothing(tmpfs, random_checkpoint):
    req = triple_run(tmpfs, random_checkpoint)
    rundir = RunDir(req.run_dir)
    filled: list[int] = []

    def fill_after_the_first_release(report, total: int) -> None:
        if not filled and "COG started" in (rundir.logs / "driver.log").read_text():
            fill_disk(tmpfs, leave=16 << 10)
            filled.append(report.done)

    with pytest.raises(SinolcError) as err:  # the COG's, the quicklook's, the state's or a chunk's write
        infer.run(req, on_progress=fill_after_the_first_release)
    assert filled and "\n" not in str(err.value)
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] >= filled[0]  # every chunk recorded before the disk filled is kept
    for path in rundir.mosaics.glob("*.tif"):
        assert cog_validate(path, quiet=True)[0], path
    (tmpfs / "filler").unlink()
    try:  # the same command resumes; chunks whose output could not be written are rerun
        infer.run(req)
    except ChunkFailures:
        infer.rerun(rundir.root, failed=True)
    for code in CODES:
        assert_delivered(rundir, code)
