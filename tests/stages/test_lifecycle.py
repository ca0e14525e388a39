"""A driver's start, end and failures: recorded in driver.json and written to logs/driver.log."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from conftest import small_grid

from sinolc_dist.errors import ConfigError, InputError, RunDirError
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir, setup_logging
from sinolc_dist.rundir.state import StateStore
from sinolc_dist.stages import infer
from sinolc_dist.stages.lifecycle import (
    FAILED,
    FINISHED,
    RUNNING,
    DriverRecord,
    driver_session,
    mosaic_command,
    mosaic_stage,
    read_record,
)


def _log(rundir: RunDir) -> str:
    return (rundir.logs / "driver.log").read_text()


@pytest.fixture
def rundir(tmp_path) -> RunDir:
    rundir = RunDir(tmp_path / "run").create()
    setup_logging(rundir)
    return rundir


def test_a_finished_and_a_failed_driver_are_recorded_and_logged(rundir):
    with driver_session(rundir, "run") as started:
        assert read_record(rundir) == started and started.end == RUNNING
    assert read_record(rundir).end == FINISHED
    with pytest.raises(InputError), driver_session(rundir, "run"):
        raise InputError("no input imagery in input.zarr: run `sinolc-dist ingest` first\nsecond line")
    record = read_record(rundir)
    assert record.end == FAILED and record.ended
    assert record.error == "no input imagery in input.zarr: run `sinolc-dist ingest` first"
    log = _log(rundir)
    assert "driver finished: run" in log
    assert "run stopped: no input imagery in input.zarr" in log and "Traceback" not in log


def test_an_unexpected_error_is_logged_with_its_traceback(rundir):
    with pytest.raises(ZeroDivisionError), driver_session(rundir, "ingest"):
        _ = 1 / 0
    assert read_record(rundir).error == "ZeroDivisionError: division by zero"
    log = _log(rundir)
    assert "ingest stopped: ZeroDivisionError: division by zero" in log and "Traceback" in log


def test_a_refused_driver_leaves_the_live_one_s_record(rundir):
    with driver_session(rundir, "run") as live:
        with pytest.raises(RunDirError, match="another driver is running"), driver_session(rundir, "ingest"):
            pass
        assert read_record(rundir) == live
    assert "ingest stopped: another driver is running" in _log(rundir)


def test_mosaic_stage_failure_is_logged(rundir):
    with pytest.raises(RunDirError, match="not a run directory"):
        mosaic_stage(rundir)
    log = _log(rundir)
    assert "mosaic stage: started" in log and "mosaic stage: failed: " in log


def test_mosaic_command_opens_its_own_log(tmp_path):
    rundir = RunDir(tmp_path / "run").create()  # no log set up by the caller, as from the CLI
    with pytest.raises(RunDirError, match="not a run directory"):
        mosaic_command(rundir)
    assert "mosaic stage: failed: " in _log(rundir)


def test_mosaic_command_refuses_an_unknown_profile_before_the_stage(rundir):
    with pytest.raises(ConfigError, match="no-such-profile"):
        mosaic_command(rundir, "no-such-profile")
    assert "mosaic stage: started" not in _log(rundir)


def test_run_stopped_by_an_error_is_in_the_log(small_run):
    rundir, req = small_run["rundir"], small_run["req"]
    shutil.rmtree(rundir.input)
    with pytest.raises(InputError, match="no input imagery"):
        infer.run(req)
    assert read_record(rundir).end == FAILED
    assert "run stopped: no input imagery" in _log(rundir)


def test_any_stage_after_a_vanished_run_counts_the_chunks_it_lost(rundir):
    grid = small_grid()
    rundir.config.write_text(json.dumps({"grid": grid.to_dict()}))
    chunks = sorted(grid.chunks_in(grid.full_window))
    with StateStore(rundir.state) as state:
        state.add_chunks((c, ["420000"]) for c in chunks)
    # What a SIGKILLed run leaves: its "running" record, and a shard it wrote but never recorded.
    vanished = DriverRecord("run", "elsewhere", 4242, "earlier", time.time() - 5)
    rundir.driver_record.write_text(json.dumps(vanished.__dict__))
    arr = stores.create_store(rundir.output, grid, "output")
    shard = grid.shard_window(grid.shard_of(chunks[0]))
    stores.write_window(arr, shard, np.ones((shard.height, shard.width), np.uint8))
    with driver_session(rundir, "ingest"):
        pass
    with StateStore(rundir.state) as state:
        lost = {r.chunk for r in state.records() if r.attempts == 1}
        assert lost == set(grid.chunks_in(shard)) and state.recomputed() == 0
    assert read_record(rundir).stage == "ingest" and read_record(rundir).end == FINISHED
    assert ("ingest after a vanished driver (run, PID 4242 on host elsewhere, started earlier, no end "
            f"recorded): {len(lost)} chunk(s) it computed were not recorded") in _log(rundir)
