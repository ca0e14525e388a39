"""The cluster layer on a real SLURM (start one with `sudo cluster/local-slurm/start.sh`).

Worker jobs go through sbatch with TLS and adaptive scaling; a worker job cancelled
mid-run is replaced and costs no chunk; the driver itself runs as a batch job.  Every
output must equal a LocalCluster run of the same scene.  All Dask addresses are on
127.0.0.1 (the profiles use ``interface: lo``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
from conftest import done_count, driver_args, kill_busiest_worker_once, run_output
from distributed import get_client

from sinolc_dist.errors import ConfigError
from sinolc_dist.stages import infer
from tests.cluster.test_core import listening, workers_listening
from tests.stages.test_dispatch_signals import interrupt_run


def _why_no_slurm() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM: sinfo is not on PATH (start one: sudo cluster/local-slurm/start.sh)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20,
                          check=False)
    if proc.returncode:
        return f"SLURM does not answer: {' '.join(proc.stderr.split())}"
    if not {"idle", "mixed"} & set(proc.stdout.split()):
        return f"no idle SLURM node (sinfo states: {' '.join(proc.stdout.split()) or 'none'})"
    return None


NO_SLURM = _why_no_slurm()
pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(NO_SLURM is not None, reason=NO_SLURM or "")]


@pytest.fixture
def job_name():
    """A job name unique to the test; its jobs are cancelled afterwards, whatever happened."""
    name = f"sinolc-t{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", "-n", name], check=False)


def _profile(tmp_path: Path, job_name: str, **extra: object) -> str:
    path = tmp_path / "slurm-test.yaml"
    path.write_text(yaml.safe_dump({"slurm": {
        "cores": 1, "processes": 1, "memory": "2GB", "queue": "debug", "walltime": "00:30:00",
        "interface": "lo", "tls": True, "minimum_jobs": 2, "maximum_jobs": 2, "torch_threads": 1,
        "job_name": job_name, **extra,
    }}))
    return str(path)


def _failing_starts(slots: Path, fail: str) -> list[str]:
    """A job prologue that claims the next start slot (0, 1, ...) and dies 10 s in when ``fail`` says so.

    ``fail`` is a shell test on ``$n``, the slot; the delay lets the first worker connect first.
    """
    return [f"n=0; until mkdir {slots}/start-$n 2>/dev/null; do n=$((n+1)); done",
            f'if {fail}; then sleep 10; echo "start $n: module cuda/12.4 not found" >&2; exit 3; fi']


def _wait_for_log(rundir, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (rundir.logs / "driver.log").read_text():
            return True
        time.sleep(0.5)
    return False


def test_worker_job_dying_at_start_mid_run_is_replaced(small_run, reference, tmp_path, job_name):
    # The second job dies at start, after the first worker connected: dask-jobqueue would count
    # it as requested for ever; the watchdog logs the scheduler's words and replaces it.
    rundir, scene = small_run["rundir"], small_run["scene"]
    slots = tmp_path / "slots"
    slots.mkdir()
    profile = _profile(tmp_path, job_name, watch_interval=2,
                       job_script_prologue=_failing_starts(slots, '[ "$n" = 1 ]'))
    waited: dict[str, bool] = {}

    def hold_until_replaced(report, total) -> None:
        # The dispatch waits here; the cluster, its jobs and the watchdog go on in their threads.
        if report.done and not waited:
            waited["replaced"] = _wait_for_log(rundir, "submitting a replacement", 90)
            deadline = time.monotonic() + 60  # adaptive scaling submits the replacement
            while time.monotonic() < deadline and not (slots / "start-2").is_dir():
                time.sleep(0.5)

    req = replace(small_run["req"], cluster=profile, mosaic=False)
    infer.run(req, on_progress=hold_until_replaced)
    assert waited["replaced"], (rundir.logs / "driver.log").read_text()
    log = (rundir.logs / "driver.log").read_text()
    assert re.search(r"worker job \d+ ended before its Dask worker connected: JobState=FAILED .*"
                     r"ExitCode=3:0", log)
    assert "start 1: module cuda/12.4 not found" in log  # the job's own log, quoted
    assert "'job_script_prologue'" in log  # the profile key to look at
    assert (slots / "start-2").is_dir()  # the replacement started
    assert done_count(rundir) == 12
    assert np.array_equal(run_output(rundir, scene.window), reference)


def test_run_stops_when_every_new_job_dies_at_start(small_run, tmp_path, job_name):
    rundir = small_run["rundir"]
    slots = tmp_path / "slots"
    slots.mkdir()
    profile = _profile(tmp_path, job_name, minimum_jobs=1, maximum_jobs=1, watch_interval=2,
                       give_up_after=2, job_script_prologue=_failing_starts(slots, '[ "$n" -ge 1 ]'))

    def lose_the_only_worker(report, total) -> None:
        if report.done and not (slots / "cancelled").exists():
            (slots / "cancelled").mkdir()
            subprocess.run(["scancel", "-n", job_name], check=True)

    req = replace(small_run["req"], cluster=profile, mosaic=False)
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}), \
            pytest.raises(ConfigError, match=r"2 slurm worker jobs died before their Dask workers connected"):
        infer.run(req, on_progress=lose_the_only_worker)
    assert 0 < done_count(rundir) < 12  # what was done is kept, to resume



def _running(job_name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", job_name, "-t", "RUNNING", "-o", "%i"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_run_through_sbatch_equals_local(small_run, reference, tmp_path, job_name):
    rundir, scene = small_run["rundir"], small_run["scene"]
    req = replace(small_run["req"], cluster=_profile(tmp_path, job_name), mosaic=False)
    summary = infer.run(req)
    assert summary.report.done == 12 and done_count(rundir) == 12
    assert np.array_equal(run_output(rundir, scene.window), reference)
    assert summary.dashboard.startswith("http://127.0.0.1:")
    logs = sorted((rundir.root / "logs" / "workers").glob(f"{job_name}-*.err"))
    assert len(logs) >= 2  # the workers ran as SLURM jobs
    assert re.search(r"Start worker at:\s+tls://127\.0\.0\.1:", logs[0].read_text())
    jobs = {p.stem.rsplit("-", 1)[1] for p in logs}
    with closing(sqlite3.connect(rundir.state)) as db:  # each chunk's record names the job that computed it
        workers = {w for (w,) in db.execute("SELECT worker FROM chunks")}
    assert workers and all(re.fullmatch(r"job (\d+) on .+:\d+", w)[1] in jobs for w in workers), workers


def test_cancelled_worker_job_is_replaced(small_run_one_chunk_tasks, reference, tmp_path, job_name):
    small_run = small_run_one_chunk_tasks
    rundir, scene = small_run["rundir"], small_run["scene"]
    req = replace(small_run["req"], cluster=_profile(tmp_path, job_name), mosaic=False)
    seen: dict[str, object] = {}

    def job_of(address: str) -> str:  # the job a worker runs in, from its log <name>-<jobid>.err
        logs = (rundir.root / "logs" / "workers").glob(f"{job_name}-*.err")
        return next(p.stem.rsplit("-", 1)[1] for p in logs if address in p.read_text())

    cancel = kill_busiest_worker_once(seen, job_of, ["scancel"], lambda: _running(job_name))
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        infer.run(req, on_progress=cancel)
    assert seen["in_flight"] and seen["replacement"], seen
    assert seen["killed"] not in _running(job_name)
    assert done_count(rundir) == 12
    assert np.array_equal(run_output(rundir, scene.window), reference)
    log = (rundir.logs / "driver.log").read_text()  # the loss and the replacement, by job id
    assert re.search(rf"slurm job {seen['killed']} lost: worker tls://127\.0\.0\.1:\d+ left", log), log
    new = seen["replacement"][0]
    assert f"slurm worker job {new} submitted (sbatch), replacing slurm job {seen['killed']}" in log, log


def test_every_listening_socket_of_a_run_is_on_loopback(small_run, tmp_path, job_name):
    seen: dict[str, object] = {}

    def look(report, total) -> None:  # mid-run: the driver (this process) and each worker job
        if report.done and not seen:
            seen["workers"] = workers_listening(get_client())
            seen["driver"] = listening([os.getpid()])

    req = replace(small_run["req"], cluster=_profile(tmp_path, job_name), mosaic=False)
    infer.run(req, on_progress=look)
    workers = seen["workers"]
    assert len(workers) == 2 and seen["driver"], seen
    for socks, dashboard in workers.values():
        assert len(socks) >= 3 and dashboard in {port for _, port in socks}  # nanny, worker, dashboard
    ips = {ip for socks, _ in workers.values() for ip, _ in socks} | {ip for ip, _ in seen["driver"]}
    assert ips == {"127.0.0.1"}, seen


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_on_slurm_flushes_the_state_and_cancels_the_worker_jobs(small_run, tmp_path, job_name,
                                                                       signum, code):
    # SIGINT as Ctrl-C sends it (the worker jobs are out of the terminal's reach), SIGTERM as `kill`.
    rundir = small_run["rundir"]
    req = replace(small_run["req"], cluster=_profile(tmp_path, job_name))
    rc, out, _ = interrupt_run(driver_args(req), rundir, signum, whole_group=False)
    assert rc == code, out
    done = done_count(rundir)
    assert 0 < done < 12
    assert out.strip().splitlines()[-1] == \
        f"error: interrupted: {done} chunks done, resume with the same command"
    # No worker job left queued or running (the cancelled ones may still show COMPLETING a moment).
    states = subprocess.run(["squeue", "-h", "-n", job_name, "-o", "%T"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert not {"PENDING", "RUNNING"} & set(states), states
    log = (rundir.logs / "driver.log").read_text()
    assert re.search(r"cancelling worker job\(s\) \d+ \d+", log) and signal.Signals(signum).name in log, log


def _wait_for_job(job_id: str, timeout: float) -> tuple[str, str]:
    """(JobState, ExitCode) once the job has left the queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                             text=True, check=True).stdout
        state, code = re.search(r"JobState=(\S+)", out)[1], re.search(r"ExitCode=(\S+)", out)[1]
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state, code
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {state} after {timeout} s")


def test_driver_submitted_as_a_job(small_run, reference, tmp_path, job_name):
    rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
    proc = subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "submit",
         "--region", req.region, "--workflow", req.workflow, "--cluster", _profile(tmp_path, job_name),
         "--run-dir", str(rundir.root), "--driver-walltime", "00:20:00", "--driver-queue", "debug"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"driver job: (\d+)", proc.stdout)[1]
    try:
        state = _wait_for_job(job_id, timeout=300)
    finally:
        subprocess.run(["scancel", job_id], check=False)
    log = (rundir.root / "logs" / f"driver-{job_id}.out").read_text()
    assert state == ("COMPLETED", "0:0"), log
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", log), log
    assert "inference: 12 chunk(s) done" in log and "mosaic: " in log, log
    assert np.array_equal(run_output(rundir, scene.window), reference)
