"""SIGINT (Ctrl-C) and SIGTERM on a real `sinolc-dist run`: one clear line, 130/143, state kept, no worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
from conftest import driver_args, recorded_done

from sinolc_dist.errors import Interrupted
from sinolc_dist.rundir.integrity import present_shards
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, StateStore
from sinolc_dist.stages.dispatch import interruptible


def interrupt_run(args: list[str], rundir: RunDir, signum: int, whole_group: bool,
                  after_done: int = 1) -> tuple[int, str, list[psutil.Process]]:
    """Start ``args``, send ``signum`` once ``after_done`` chunks are recorded; (exit code, output, children).

    ``whole_group`` sends it as a terminal's Ctrl-C does (the driver and its local
    workers); otherwise to the driver alone, as ``kill`` and batch schedulers do.
    """
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while recorded_done(rundir.state) < after_done and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0]
        children = psutil.Process(proc.pid).children(recursive=True)
        if whole_group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, children


def written_chunks(rundir: RunDir) -> set:
    """The planned chunks whose shard the output store holds."""
    grid = rundir.read_config().grid
    with StateStore(rundir.state) as state:
        planned = {r.chunk for r in state.records()}
    return {c for s in present_shards(rundir.output) for c in grid.chunks_in(grid.shard_window(s))
            if c in planned}


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "whole_group"), [
    (signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)], ids=["sigint-ctrl-c", "sigterm"])
def test_signal_stops_the_run_cleanly_and_the_same_command_resumes(small_run, signum, code, whole_group):
    rundir, req = small_run["rundir"], small_run["req"]
    args = driver_args(req)
    rc, out, children = interrupt_run(args, rundir, signum, whole_group)
    assert rc == code, out
    recorded, written = set(state_done(rundir)), written_chunks(rundir)
    done = len(recorded)
    assert 0 < done < 12, out
    last = out.strip().splitlines()[-1]
    assert last == f"error: interrupted: {done} chunks done, resume with the same command", out
    assert "Traceback" not in out, out
    assert recorded <= written and len(written - recorded) <= 4 * 4  # at most the shards in flight
    _, alive = psutil.wait_procs(children, timeout=10)  # the workers went with the driver
    assert not alive, [p.cmdline() for p in alive]
    log = (rundir.logs / "driver.log").read_text()
    assert f"interrupted: {done} chunks done" in log and signal.Signals(signum).name in log
    final = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    assert len(state_done(rundir)) == 12


def state_done(rundir: RunDir) -> list:
    """The chunks a run's state records done."""
    with StateStore(rundir.state) as state:
        return state.chunk_ids(DONE)


def test_interrupt_in_the_block_becomes_one_error_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cleaned = []

    def work() -> None:
        with interruptible(lambda: 7):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here
            finally:
                cleaned.append(True)  # what encloses the block unwinds (flush, cluster close)

    with pytest.raises(Interrupted) as err:
        work()
    assert cleaned == [True] and err.value.exit_code == 143
    assert str(err.value) == "interrupted: 7 chunks done, resume with the same command"
    assert {s: signal.getsignal(s) for s in before} == before
