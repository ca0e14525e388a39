from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import threading

import pytest
from conftest import WORKFLOW, fill_disk, prepared_run

from sinolc_dist.errors import RunDirError
from sinolc_dist.rundir.layout import RunDir, check_frozen, setup_logging
from tests.test_cli import sinolc

HOLD = """
import sys, time
from sinolc_dist.rundir.layout import RunDir
with RunDir(__import__('pathlib').Path(sys.argv[1])).driver_lock():
    print('locked', flush=True)
    time.sleep(60)
"""


def _recorded(path, config: dict) -> None:
    path.write_text(json.dumps(config))


def test_freeze_refuses_incompatible_and_accepts_compatible(tmp_path):
    path = tmp_path / "run.json"
    assert check_frozen(path, {"grid": 1, "cluster": "local"}, frozenset({"cluster"})) == {
        "grid": 1, "cluster": "local"}  # nothing recorded yet: the configuration itself
    _recorded(path, {"grid": 1, "cluster": "local"})
    merged = check_frozen(path, {"grid": 1, "cluster": "slurm"}, frozenset({"cluster"}))
    assert merged["cluster"] == "slurm"
    with pytest.raises(RunDirError, match=r"grid: 1 -> 2"):
        check_frozen(path, {"grid": 2, "cluster": "local"}, frozenset({"cluster"}))
    assert json.loads(path.read_text())["grid"] == 1  # checking writes nothing


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
    path = tmp_path / "run.json"
    _recorded(path, {"grid": 1})
    assert check_frozen(path, {"grid": 1, "imagery": []}, frozenset())["imagery"] == []
    with pytest.raises(RunDirError, match="imagery"):
        check_frozen(path, {"grid": 1, "imagery": ["a.tif"]}, frozenset())


def _files(root) -> dict:
    """Every file under ``root`` with its bytes (small run directories only)."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_run_on_a_full_disk_is_one_line_and_loses_nothing(tmpfs, random_checkpoint):
    """Issue 15: a rerun while the disk is still full gave an OSError traceback at the driver lock.

    The first run would only add chunks to the same code path: the lock is taken before anything else.
    """
    req = prepared_run(tmpfs, WORKFLOW % random_checkpoint)["req"]
    fill_disk(tmpfs)
    before = _files(req.run_dir)
    proc = sinolc("run", "--run-dir", str(req.run_dir), "--region", req.region, "--workflow", req.workflow,
                  "--cluster", req.cluster)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith(f"error: cannot take the driver lock {RunDir(req.run_dir).lock}: "
                               "No space left on device; free space")
    kept = {k: v for k, v in _files(req.run_dir).items() if k.parts[0] != "logs" and k.name != "driver.lock"}
    assert kept == {k: v for k, v in before.items() if k.parts[0] != "logs"}


def test_a_status_probe_does_not_refuse_a_starting_driver(tmp_path):
    rd = RunDir(tmp_path).create()
    rd.lock.touch()
    fd = os.open(rd.lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what driver_holder() holds for an instant
    release = threading.Timer(0.15, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    release.start()
    with rd.driver_lock():
        assert rd.driver_holder()["pid"] == os.getpid()
    release.join()
    assert rd.driver_holder() is None


def test_a_process_logs_only_into_the_run_directory_it_drives_now(tmp_path):
    first, second = RunDir(tmp_path / "a").create(), RunDir(tmp_path / "b").create()
    log = logging.getLogger("sinolc_dist.test")
    setup_logging(first)
    log.info("for the first run")
    setup_logging(second)
    setup_logging(second)  # twice: still one line per event
    log.info("for the second run")
    a, b = ((r.logs / "driver.log").read_text() for r in (first, second))
    assert "for the first run" in a and "for the second run" not in a
    assert b.count("for the second run") == 1


def test_moving_on_from_a_run_directory_on_a_full_disk_drops_its_last_lines(tmpfs, tmp_path):
    full, other = RunDir(tmpfs / "run").create(), RunDir(tmp_path / "other").create()
    log = logging.getLogger("sinolc_dist.test")
    setup_logging(full)
    fill_disk(tmpfs)
    for _ in range(50):  # refused by the full disk: dropped, buffered bytes may remain
        log.info("x" * 100)
    setup_logging(other)  # closing the full disk's log must not raise
    log.info("on the other disk")
    assert "on the other disk" in (other.logs / "driver.log").read_text()
