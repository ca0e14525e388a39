from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sinolc_dist.errors import RunDirError
from sinolc_dist.rundir import RunDir

HOLD = """
import sys, time
from sinolc_dist.rundir import RunDir
with RunDir(__import__('pathlib').Path(sys.argv[1])).driver_lock():
    print('locked', flush=True)
    time.sleep(60)
"""


def test_freeze_refuses_incompatible_and_accepts_compatible(tmp_path):
    rd = RunDir(tmp_path).create()
    rd.freeze({"grid": 1, "cluster": "local"}, frozenset({"cluster"}))
    merged = rd.freeze({"grid": 1, "cluster": "slurm"}, frozenset({"cluster"}))
    assert merged["cluster"] == "slurm"
    with pytest.raises(RunDirError, match=r"grid: 1 -> 2"):
        rd.freeze({"grid": 2, "cluster": "local"}, frozenset({"cluster"}))
    assert json.loads(rd.config.read_text())["grid"] == 1


def test_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory"):
        RunDir(tmp_path / "nope").require()


def test_second_driver_is_refused_and_dead_lock_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"PID {proc.pid}"), RunDir(tmp_path).driver_lock():
            pass
    finally:
        proc.kill()
        proc.wait()
    # The dead driver's lock file is still there, but the lock is free again.
    assert (tmp_path / "driver.lock").exists()
    with RunDir(tmp_path).driver_lock():
        info = json.loads((tmp_path / "driver.lock").read_text())
        assert info["pid"] == os.getpid()


def test_a_setting_added_later_is_compatible_while_empty(tmp_path):
    rd = RunDir(tmp_path).create()
    rd.freeze({"grid": 1}, frozenset())
    assert rd.freeze({"grid": 1, "imagery": []}, frozenset())["imagery"] == []
    other = RunDir(tmp_path / "other").create()
    other.freeze({"grid": 1}, frozenset())
    with pytest.raises(RunDirError, match="imagery"):
        other.freeze({"grid": 1, "imagery": ["a.tif"]}, frozenset())
