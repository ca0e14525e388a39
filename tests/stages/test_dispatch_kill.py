"""Kill the driver with SIGKILL at several moments, resume, and get the same output."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import driver_args, recorded_done, run_output, start_driver

from sinolc_dist.demo.run import prepare_demo
from sinolc_dist.grid import Grid
from sinolc_dist.rundir.integrity import present_shards
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, StateStore
from sinolc_dist.stages import infer

KILL_AFTER_DONE = (1, 3, 5, 7, 9)  # five different moments, by chunks recorded done


@pytest.mark.slow
def test_sigkill_at_five_moments_then_resume(small_run, tmp_path):
    rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
    grid = Grid.from_dict(Grid().to_dict() | {"chunk": 128, "block": 64, "shard": 2, "halo": 16})
    planned: set = set()
    unrecorded_per_kill = []
    for target in KILL_AFTER_DONE:
        proc = start_driver(req)
        deadline = time.time() + 120
        while recorded_done(rundir.state) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its LocalCluster, at once
        proc.wait()
        # Work written but not recorded (to be computed again) is at most what was in flight.
        with StateStore(rundir.state) as state:
            done = set(state.chunk_ids(DONE))
            planned = planned or {r.chunk for r in state.records()}
        written = {c for s in present_shards(rundir.output)
                   for c in grid.chunks_in(grid.shard_window(s)) if c in planned}
        unrecorded_per_kill.append(len({grid.shard_of(c) for c in written - done}))
    final = subprocess.run(driver_args(req), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert max(unrecorded_per_kill) <= 4, unrecorded_per_kill  # run.max_in_flight of the workflow
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] == 12
    # Byte-identical to an uninterrupted run on the same input.
    ref = RunDir(tmp_path / "reference")
    ref_scene = prepare_demo(ref, req.workflow, (scene.window.height, scene.window.width))
    infer.run(infer.RunRequest(ref.root, str(ref_scene.region_file), req.workflow, req.cluster,
                                     mosaic=False))
    assert run_output(rundir, scene.window).tobytes() == run_output(ref, ref_scene.window).tobytes()
    assert np.count_nonzero(run_output(rundir, scene.window)) == scene.window.height * scene.window.width

