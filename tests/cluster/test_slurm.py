"""SLURM: its job status and walltimes, and the scheduler contract on a real SLURM.

Start one with `sudo cluster/local-slurm/start.sh`.  Worker jobs go through sbatch with TLS
and adaptive scaling, all Dask addresses on 127.0.0.1 (``interface: lo``); beyond the shared
scenarios (tests/cluster/scenarios.py), the watchdog replaces a job dying at start mid-run,
stops a run whose every new job dies, and a signal to the driver cancels its worker jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import dask
import numpy as np
import pytest
from conftest import done_count, driver_args, run_output
from distributed import get_client

from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages import infer
from tests.cluster.scenarios import SchedulerContract
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
NEEDS_SLURM = [pytest.mark.slurm, pytest.mark.slow,
               pytest.mark.skipif(NO_SLURM is not None, reason=NO_SLURM or "")]


@pytest.mark.parametrize(("text", "seconds"), [
    ("02:00:00", 7200), ("30", 1800), ("1-12", 129600), ("2-00:30:00", 174600), ("10:30", 630),
])
def test_walltime_forms(text, seconds):
    """One number is minutes; days come before a dash."""
    assert scheduler("slurm").walltime_seconds(text) == seconds


def _fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, rc: int = 0) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\ncat <<'EOF'\n{out}\nEOF\nexit {rc}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("out", "rc", "expected"), [
    ("JobId=7 JobName=w JobState=RUNNING Reason=None ExitCode=0:0", 0, ("alive", "RUNNING")),
    ("JobId=7 JobName=w JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0", 0,
     ("ended", "JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0")),
    ("slurm_load_jobs error: Invalid job id specified", 1,
     ("ended", "slurm_load_jobs error: Invalid job id specified")),
])
def test_job_status_reads_scontrol(tmp_path, monkeypatch, out, rc, expected):
    _fake_scontrol(tmp_path, monkeypatch, out, rc)
    assert scheduler("slurm").job_status("7") == expected


def test_hints_name_slurm_keys():
    slurm = scheduler("slurm")
    assert slurm.hint("Invalid generic resource (gres) specification", {"queue": "gpu"}) == \
        "change the slurm profile's 'gpus_per_job' or 'job_extra_directives' (the --gres/--gpus line)"
    assert slurm.hint("Invalid account or account/partition combination", {"account": "a"}) == \
        "change the slurm profile's 'account' (now account: 'a')"
    assert slurm.hint("Job violates accounting/QOS policy (job submit limit, user's size and/or time "
                      "limits)") == "change the slurm profile's 'walltime'"  # the first topic that matches
    assert slurm.hint("QOSMaxWallDurationPerJobLimit qos x") == \
        "change the slurm profile's 'job_extra_directives' (the --qos line)"


def _failing_starts(slots: Path, fail: str) -> list[str]:
    """A job prologue that claims the next start slot (0, 1, ...) and dies 10 s in when ``fail`` says so.

    ``fail`` is a shell test on ``$n``, the slot; the delay lets the first worker connect first.
    """
    return [f"n=0; until mkdir {slots}/start-$n 2>/dev/null; do n=$((n+1)); done",
            f'if {fail}; then sleep 10; echo "start $n: module cuda/12.4 not found" >&2; exit 3; fi']


def _wait_for_log(rundir: RunDir, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (rundir.logs / "driver.log").read_text():
            return True
        time.sleep(0.5)
    return False


class TestSlurm(SchedulerContract):
    """The scheduler contract on SLURM, and SLURM's own scenarios (the watchdog, signals)."""

    pytestmark = NEEDS_SLURM
    kind = "slurm"
    kill_command: ClassVar[list[str]] = ["scancel"]
    submit_command = "sbatch"
    driver_queue = "debug"
    refused_queue_said = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    dying_start: ClassVar[dict[str, Any]] = {
        "job_script_prologue": ["source /nonexistent/conda.sh || exit 1"]}
    dying_said = "ended before its Dask worker connected: JobState=FAILED"
    dying_key = "'job_script_prologue'"
    driver_success = ("JobState=COMPLETED", "ExitCode=0:0")

    def settings(self, job_name: str, **extra: object) -> dict[str, Any]:
        """One-CPU workers on the local SLURM's partition ``debug``, over TLS on loopback."""
        return {"cores": 1, "processes": 1, "memory": "2GB", "queue": "debug", "walltime": "00:30:00",
                "interface": "lo", "tls": True, "minimum_jobs": 2, "maximum_jobs": 2, "torch_threads": 1,
                "job_name": job_name, **extra}

    def running(self, job_name: str) -> list[str]:
        """``squeue``'s running jobs of that name."""
        out = subprocess.run(["squeue", "-h", "-n", job_name, "-t", "RUNNING", "-o", "%i"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()

    def worker_logs(self, rundir: RunDir, job_name: str) -> dict[str, str]:
        """dask-jobqueue's ``<job name>-<job id>.err`` files."""
        return {p.stem.rsplit("-", 1)[1]: p.read_text(errors="replace")
                for p in rundir.worker_logs.glob(f"{job_name}-*.err")}

    def cancel_all(self, job_name: str) -> None:
        """``scancel -n``."""
        subprocess.run(["scancel", "-n", job_name], check=False)

    def settled(self, said: str) -> bool:
        """A job still COMPLETING has not its final state yet."""
        return "JobState=COMPLETING" not in said

    def test_worker_job_dying_at_start_mid_run_is_replaced(self, small_run, reference, tmp_path, job_name):
        # The second job dies at start, after the first worker connected: dask-jobqueue would count
        # it as requested for ever; the watchdog logs the scheduler's words and replaces it.
        rundir, scene = small_run["rundir"], small_run["scene"]
        slots = tmp_path / "slots"
        slots.mkdir()
        profile = self.profile(tmp_path, job_name, watch_interval=2,
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

    def test_run_stops_when_every_new_job_dies_at_start(self, small_run, tmp_path, job_name):
        rundir = small_run["rundir"]
        slots = tmp_path / "slots"
        slots.mkdir()
        profile = self.profile(tmp_path, job_name, minimum_jobs=1, maximum_jobs=1, watch_interval=2,
                               give_up_after=2, job_script_prologue=_failing_starts(slots, '[ "$n" -ge 1 ]'))

        def lose_the_only_worker(report, total) -> None:
            if report.done and not (slots / "cancelled").exists():
                (slots / "cancelled").mkdir()
                subprocess.run(["scancel", "-n", job_name], check=True)

        req = replace(small_run["req"], cluster=profile, mosaic=False)
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}), \
                pytest.raises(ConfigError, match=r"2 slurm worker jobs died before their Dask workers "
                                                 r"connected"):
            infer.run(req, on_progress=lose_the_only_worker)
        assert 0 < done_count(rundir) < 12  # what was done is kept, to resume

    def test_a_two_gpu_job_runs_a_worker_pinned_to_each_gpu(self, small_run, reference, tmp_path, job_name):
        # The local SLURM has two fake GPUs (cluster/local-slurm/start.sh): one job asks both, runs two
        # workers, each declaring GPU=1 and keeping its own device; torch stays on the CPU.
        rundir, scene = small_run["rundir"], small_run["scene"]
        profile = self.profile(tmp_path, job_name, gpus_per_job=2, cores=2, processes=2, memory="4GB",
                               minimum_jobs=1, maximum_jobs=1)
        seen: dict[str, Any] = {}

        def look(report, total) -> None:
            if report.done and not seen:
                client = get_client()
                seen["devices"] = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
                seen["resources"] = {a: w["resources"] for a, w in
                                     client.scheduler_info(n_workers=-1)["workers"].items()}
                seen["names"] = {a: w["name"] for a, w in
                                 client.scheduler_info(n_workers=-1)["workers"].items()}

        infer.run(replace(small_run["req"], cluster=profile, mosaic=False), on_progress=look)
        assert sorted(seen["devices"].values()) == ["0", "1"], seen  # one GPU each, from SLURM's 0,1
        assert all(r == {"GPU": 1} for r in seen["resources"].values()), seen
        assert len({n.rsplit("-", 1)[0] for n in seen["names"].values()}) == 1, seen  # one job
        assert len(self.worker_logs(rundir, job_name)) == 1
        assert done_count(rundir) == 12
        assert np.array_equal(run_output(rundir, scene.window), reference)

    def test_more_gpus_than_a_node_has_is_refused_quoting_slurm(self, tmp_path, job_name):
        # job_cpu within the node's two CPUs: SLURM would hold a job asking more CPUs pending, not refuse it.
        text = self.refusal(tmp_path, job_name, gpus_per_job=4, cores=4, processes=4, job_cpu=2,
                            minimum_jobs=1, maximum_jobs=1)
        assert "`sbatch` refused the worker job: " in text, text
        assert "Requested node configuration is not available" in text and "\n" not in text, text
        assert "change the slurm profile's 'gpus_per_job'," in text and "gpus_per_job: 4" in text, text
        assert not self.running(job_name)

    @pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    def test_signal_flushes_the_state_and_cancels_the_worker_jobs(self, small_run, tmp_path, job_name,
                                                                  signum, code):
        # SIGINT as Ctrl-C sends it (the worker jobs are out of the terminal's reach), SIGTERM as `kill`.
        rundir = small_run["rundir"]
        req = replace(small_run["req"], cluster=self.profile(tmp_path, job_name))
        rc, out, _ = interrupt_run(driver_args(req), rundir, signum, whole_group=False)
        assert rc == code, out
        done = done_count(rundir)
        assert 0 < done < 12
        assert out.strip().splitlines()[-1] == \
            f"error: interrupted: {done} chunks done, resume with the same command"
        # No worker job left queued or running (the cancelled ones may still show COMPLETING a moment).
        states = subprocess.run(["squeue", "-h", "-n", job_name, "-o", "%T"], capture_output=True,
                                text=True, check=True).stdout.split()
        assert not {"PENDING", "RUNNING"} & set(states), states
        log = (rundir.logs / "driver.log").read_text()
        assert re.search(r"cancelling worker job\(s\) \d+ \d+", log), log
        assert signal.Signals(signum).name in log, log
