"""Shared fixtures: small grids, real Zarr stores and real checkpoints."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import get_client
from pyproj import Transformer

from sinolc_dist.demo.run import prepare_demo
from sinolc_dist.grid import CHINA_ALBERS, LONLAT, ChunkId, Grid, Window
from sinolc_dist.legend import SINOLC, Legend
from sinolc_dist.models.checkpoint import ModelSpec, save_checkpoint
from sinolc_dist.models.l2hnet import L2HNet
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, ChunkResult, StateStore
from sinolc_dist.stages import infer


def small_grid(size: tuple[int, int] = (300, 260), chunk: int = 64, block: int = 32,
               shard: int = 2, halo: int = 11) -> Grid:
    """A small Albers grid whose whole extent is a test raster."""
    return Grid(crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_400_000.0),
                size=size, chunk=chunk, block=block, shard=shard, halo=halo)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-16 L2HNet with random weights (and random BN statistics) as a checkpoint."""
    torch.manual_seed(0)
    model = L2HNet(bands=3, classes=11, width=16)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "random16.pt"
    save_checkpoint(path, model, ModelSpec(width=16))
    return path


@pytest.fixture
def random_image() -> np.ndarray:
    """A 300×260 uint8 RGB raster with spatial structure and no nodata."""
    rng = np.random.default_rng(1)
    base = rng.integers(1, 255, size=(3, 30, 26)).repeat(10, 1).repeat(10, 2)
    noise = rng.integers(-20, 20, size=base.shape)
    return np.clip(base + noise, 1, 255).astype(np.uint8)


def input_store(path: Path, grid: Grid, image: np.ndarray):
    """A real input Zarr store over ``grid`` holding ``image`` at the grid's top-left."""
    arr = stores.create_store(path, grid, "input", bands=image.shape[0])
    stores.write_window(arr, grid.full_window, image)
    return arr


WORKFLOW = """
description: small test workflow
grid: {crs: china-albers, resolution: 1.0, chunk: 128, block: 64, shard: 2, halo: 16}
model: {checkpoint: %s, patch: 128, device: cpu}
run: {retries: 1, max_in_flight: 4}
"""
CLUSTER = """
local: {n_workers: 2, threads_per_worker: 1, torch_threads: 1, memory_limit: 2GiB}
"""
SMALL_SCENE = (384, 512)


def prepared_run(tmp_path: Path, workflow_text: str) -> dict:
    """A run directory with a 384×512 synthetic scene, the given workflow and a 2-worker profile."""
    wf = tmp_path / "small.yaml"
    wf.write_text(workflow_text)
    cl = tmp_path / "two.yaml"
    cl.write_text(CLUSTER)
    rundir = RunDir(tmp_path / "run")
    scene = prepare_demo(rundir, str(wf), SMALL_SCENE)
    req = infer.RunRequest(rundir.root, str(scene.region_file), str(wf), str(cl))
    return {"rundir": rundir, "scene": scene, "req": req, "wf": wf}


@pytest.fixture
def small_run(tmp_path: Path, random_checkpoint: Path) -> dict:
    """A run directory with a 384×512 synthetic scene, a small workflow and a 2-worker profile."""
    return prepared_run(tmp_path, WORKFLOW % random_checkpoint)


@pytest.fixture
def small_run_one_chunk_tasks(tmp_path: Path, random_checkpoint: Path) -> dict:
    """``small_run`` with one chunk per shard: 12 tasks, so work is still in flight after the first
    result (the same classes as the reference: the shard size changes only the files)."""
    return prepared_run(tmp_path, (WORKFLOW % random_checkpoint).replace("shard: 2", "shard: 1"))


def run_output(rundir: RunDir, window: Window) -> np.ndarray:
    """The output store's classes over a window."""
    grid = rundir.read_config().grid
    return stores.read_window(stores.open_array(rundir.output, grid), window)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> np.ndarray:
    """The small scene's classes from a LocalCluster run: what every scheduler must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    wf, cl = tmp / "small.yaml", tmp / "two.yaml"
    wf.write_text(WORKFLOW % random_checkpoint)
    cl.write_text(CLUSTER)
    ref = RunDir(tmp / "ref")
    scene = prepare_demo(ref, str(wf), SMALL_SCENE)
    infer.run(infer.RunRequest(ref.root, str(scene.region_file), str(wf), str(cl), mosaic=False))
    return run_output(ref, scene.window)


def busiest_worker(timeout: float = 15.0) -> tuple[str, tuple[str, ...]]:
    """``(address, tasks)`` of the worker with the most tasks processing, once one has any.

    Between two tasks a worker may briefly hold none (the next one is still queued on the
    scheduler): look again for up to ``timeout`` seconds rather than pick an idle worker.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = max(get_client().processing().items(), key=lambda kv: len(kv[1]))
        if busy[1] or time.monotonic() > deadline:
            return busy[0], tuple(busy[1])
        time.sleep(0.05)


def kill_busiest_worker_once(seen: dict, job_of: Callable[[str], str], kill: list[str],
                             running: Callable[[], list[str]]) -> Callable[[object, int], None]:
    """A progress callback that, at the first result, kills the batch job of the busiest worker.

    ``job_of(address)`` names the job a worker runs in, ``kill + [job]`` is the
    scheduler's delete command and ``running()`` lists the test's running jobs.
    The dispatch waits inside the callback (up to 90 s) until a replacement job
    runs; ``seen`` gets ``in_flight`` (the victim's tasks), ``killed`` and
    ``replacement``.
    """
    def callback(report, total) -> None:
        if not report.done or "killed" in seen:
            return
        address, tasks = busiest_worker()
        seen["in_flight"] = len(tasks)
        victim = job_of(address)
        before = set(running())
        subprocess.run([*kill, victim], check=True, capture_output=True)
        seen["killed"] = victim
        # The scheduler and adaptive scaling go on in their thread meanwhile.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not set(running()) - before:
            time.sleep(0.5)
        seen["replacement"] = sorted(set(running()) - before)

    return callback


def done_count(rundir: RunDir) -> int:
    """Chunks recorded done in a run's state (read while a run goes on)."""
    with StateStore(rundir.state) as state:
        return state.count()[DONE]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted on a fresh folder (tests run as root, here and in CI): a disk to fill.

    Unmounted afterwards; skipped, with the reason, only where mounting is impossible.
    """
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs for the full-disk tests ({proc.stderr.strip()}): run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill_disk(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` with one file until about ``leave`` bytes stay free."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while (room := shutil.disk_usage(folder).free - leave) > 0:
            os.write(fd, bytes(min(room, 1 << 20)))
    except OSError:  # no space left: full
        pass
    finally:
        os.close(fd)


def recorded_done(state_path: Path) -> int:
    """Chunks recorded done, read-only (a live driver may hold the state; 0 while it is locked)."""
    try:
        con = sqlite3.connect(f"file:{state_path}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM chunks WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def driver_args(req: infer.RunRequest) -> list[str]:
    """The command line of a real `sinolc-dist run` driver for ``req`` (no mosaic stage)."""
    return [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "run",
            "--region", req.region, "--workflow", req.workflow, "--cluster", req.cluster,
            "--run-dir", str(req.run_dir), "--no-mosaic"]


def start_driver(req: infer.RunRequest) -> subprocess.Popen:
    """Start that driver in its own session (so a test can kill its whole process group)."""
    return subprocess.Popen(driver_args(req), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def assert_valid_cog(path: Path) -> None:
    """rio-cogeo calls the file a valid COG, and GDAL's own ``gdalinfo -checksum`` reads every pixel of it."""
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _ = cog_validate(path, quiet=True)
    assert valid, errors
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo:
        run = subprocess.run([gdalinfo, "-checksum", str(path)], capture_output=True, text=True)
        assert run.returncode == 0 and "Checksum=" in run.stdout, run.stderr


# ---- a small finished run for the validate tests (tests/validate): one conftest for all of tests/, since
# a second one would shadow this module's name in worker processes that import `conftest`.
HUBEI = "420000"
#: Chunks that are not done: pending, failed, without imagery; CHUNKS - those - UNPLANNED are done.
PENDING, FAILED, NO_IMAGERY, UNPLANNED = ChunkId(0, 0), ChunkId(0, 1), ChunkId(0, 2), ChunkId(3, 3)


def hubei_grid() -> Grid:
    """A 256×256 px, 2 m Albers grid north-west of Wuhan: 4×4 chunks of 64 px, all in Hubei."""
    x, y = Transformer.from_crs(LONLAT, CHINA_ALBERS, always_xy=True).transform(113.70, 30.95)
    return Grid(crs=CHINA_ALBERS, resolution=2.0, origin=(round(x), round(y)), size=(256, 256),
                chunk=64, block=32, shard=2, halo=0)


def truth_classes(size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """The map's classes: 8×8 px blocks cycling through codes 1..5 (SinoLC codes), no nodata."""
    rows, cols = np.indices(size)
    return (1 + (rows // 8 + 2 * (cols // 8)) % 5).astype(np.uint8)


@dataclass(frozen=True)
class FakeRun:
    """A run directory, its grid and the classes its output store holds."""

    rundir: RunDir
    grid: Grid
    classes: np.ndarray

    def pixel_xy(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid CRS coordinates of pixel centres."""
        return self.grid.transform @ (np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)

    def pixel_lonlat(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat of pixel centres."""
        x, y = self.pixel_xy(rows, cols)
        lon, lat = Transformer.from_crs(CHINA_ALBERS, LONLAT, always_xy=True).transform(x, y)
        return np.asarray(lon), np.asarray(lat)


def make_run(root: Path, nodata_px: int = 0, legend: Legend = SINOLC) -> FakeRun:
    """Write run.json, state.sqlite (chunk states above) and output.zarr for :func:`hubei_grid`.

    ``nodata_px``: the first pixels of chunk c/1/1's first row set to 0.
    """
    grid = hubei_grid()
    rundir = RunDir(root).create()
    rundir.freeze(RunConfig(grid=grid, region="Hubei", legend=legend), frozenset())
    classes = truth_classes(grid.size)
    classes[64, 64:64 + nodata_px] = 0
    arr = stores.create_store(rundir.output, grid, "output")
    stores.write_window(arr, grid.full_window, classes)
    planned = [c for c in grid.chunks_in(grid.full_window) if c != UNPLANNED]
    with StateStore(rundir.state) as state:
        state.add_chunks((c, (HUBEI,)) for c in planned)
        done = [c for c in planned if c not in (PENDING, FAILED, NO_IMAGERY)]
        state.record([ChunkResult(c, ok=True) for c in done] + [ChunkResult(FAILED, ok=False, error="boom")])
        state.mark_no_imagery([NO_IMAGERY])
    return FakeRun(rundir, grid, classes)


@pytest.fixture
def fake_run(tmp_path: Path) -> FakeRun:
    """A small finished-in-part run (12 of 16 chunks done) in Hubei."""
    return make_run(tmp_path / "run", nodata_px=4)
