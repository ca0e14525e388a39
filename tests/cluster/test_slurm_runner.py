"""One-allocation mode: its profile, its job script, its refusals, and real runs on the local SLURM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import done_count, driver_args, run_output

from sinolc_dist.cluster.profiles import check_profile
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.cluster.slurm_runner import allocation
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages.submit import preview
from tests.cluster.test_slurm import NEEDS_SLURM

#: A one-allocation profile for the local SLURM: task 0 drives, task 1 is the only worker.
LOCAL = {"queue": "debug", "tasks": 2, "cores": 1, "memory": "2GB", "walltime": "00:20:00",
         "worker_on_driver": False, "interface": "lo", "tls": True, "torch_threads": 1}
SLURM_ENV = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS")


def profile(folder: Path, **extra: object) -> str:
    path = folder / "runner.yaml"
    path.write_text(yaml.safe_dump({"slurm-runner": {**LOCAL, **extra}}))
    return str(path)


@pytest.fixture
def outside_slurm(monkeypatch):
    for name in SLURM_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("extra", "needle"), [
    ({"tasks": 1}, "'tasks' must be an integer >= 2"),
    ({"tasks": None, "nodes": 1, "tasks_per_node": 1}, "gives 1 task: one-allocation mode needs at least 2"),
    ({"processes": 4}, "unknown key(s) ['processes'] in the slurm-runner cluster profile"),
    ({"worker_on_driver": "yes"}, "'worker_on_driver' must be true or false"),
    ({"walltime": 3600}, "must be a quoted string"),
])
def test_impossible_profiles_are_refused_naming_the_key(extra, needle):
    settings = {k: v for k, v in {**LOCAL, **extra}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        check_profile("slurm-runner", settings)
    assert needle in str(err.value)


def test_outside_an_allocation_it_says_how_to_start_one(outside_slurm):
    with pytest.raises(ConfigError, match=r"runs inside one SLURM allocation.*sinolc-dist submit"):
        allocation()


def test_an_allocation_of_one_task_is_refused(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    with pytest.raises(ConfigError, match=r"SLURM job 77 runs 1 task: one-allocation mode needs at least 2"):
        allocation()


def test_the_job_script_is_one_allocation_running_the_driver_on_every_task(small_run, tmp_path):
    req = replace(small_run["req"], cluster=profile(tmp_path, nodes=2, tasks=9,
                                                    gpus_per_task=1, cores=4, memory="8GB"))
    driver, workers = preview(req)
    lines = driver.splitlines()
    for header in ("#SBATCH -N 2", "#SBATCH -n 9", "#SBATCH --cpus-per-task=4", "#SBATCH --mem-per-cpu=1907M",
                   "#SBATCH --gpus-per-task=1", "#SBATCH -t 00:20:00", "#SBATCH -p debug"):
        assert header in lines, driver
    command = lines[-1]
    assert command.startswith("exec srun --kill-on-bad-exit=0 --label "), command
    assert f" run --region {req.region} " in command and f"--cluster {req.cluster}" in command, command
    assert workers.startswith("# no worker job script"), workers


def test_run_outside_an_allocation_is_one_line_and_writes_nothing(small_run, tmp_path, outside_slurm):
    rundir = RunDir(tmp_path / "fresh")
    req = replace(small_run["req"], cluster=profile(tmp_path), run_dir=rundir.root)
    proc = subprocess.run(driver_args(req), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cluster kind 'slurm-runner' runs inside"), lines
    assert not rundir.root.exists()


# ---------------------------------------------------------------- on the local SLURM
def submit(req) -> str:
    """``sinolc-dist submit`` of the run (through the CLI, as a user does); the allocation's job id."""
    proc = subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "submit", "--region", req.region,
         "--workflow", req.workflow, "--cluster", req.cluster, "--run-dir", str(req.run_dir), "--no-mosaic"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.search(r"driver job: (\d+)", proc.stdout)[1]


def wait_until(condition, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"not {what} after {timeout} s")


def freeze_task(job_id: str, task: int) -> list[int]:
    """SIGSTOP the processes of one task of a job's step (``scontrol listpids``); their PIDs."""
    out = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=True).stdout
    pids = [int(f[0]) for f in (line.split() for line in out.splitlines()[1:])
            if len(f) == 5 and f[2] != "batch" and f[4] == str(task)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def ended(job_id: str) -> bool:
    return scheduler("slurm").job_status(job_id)[0] != "alive"


@pytest.mark.usefixtures("random_checkpoint")
class TestOneAllocation:
    """Real allocations of two tasks: the driver with the scheduler on task 0, a worker on task 1."""

    pytestmark = NEEDS_SLURM

    def test_a_run_in_one_allocation_equals_the_reference(self, small_run, reference, tmp_path):
        rundir, req = small_run["rundir"], small_run["req"]
        job = submit(replace(req, cluster=profile(tmp_path), mosaic=False))
        try:
            wait_until(lambda: ended(job), 300, f"ended (job {job})")
        finally:
            subprocess.run(["scancel", job], check=False)
        log = rundir.driver_job_output(job).read_text()
        assert "inference: 12 chunk(s) done" in log, log
        assert re.search(r"^1: .*Start worker at:\s+tls://127\.0\.0\.1:", log, re.M), log  # task 1's worker
        assert done_count(rundir) == 12
        assert np.array_equal(run_output(rundir, small_run["scene"].window), reference)

    def test_a_cancelled_allocation_is_resumed_by_the_next_with_no_chunk_lost(
            self, small_run_one_chunk_tasks, reference, tmp_path):
        run = small_run_one_chunk_tasks
        rundir, req = run["rundir"], replace(run["req"], cluster=profile(tmp_path), mosaic=False)
        shards = rundir.output / "classes" / "c"
        first = submit(req)
        try:  # the moment the only worker (task 1) has written three shards, freeze it: the run is mid-way
            wait_until(lambda: shards.is_dir() and sum(p.is_file() for p in shards.rglob("*")) >= 3, 300,
                       "three shards written", every=0.02)
            frozen = freeze_task(first, 1)
        finally:
            subprocess.run(["scancel", first], check=False)
        wait_until(lambda: ended(first), 120, f"ended (job {first})")
        before = done_count(rundir)
        assert frozen and before < 12
        second = submit(req)
        try:
            wait_until(lambda: ended(second), 300, f"ended (job {second})")
        finally:
            subprocess.run(["scancel", second], check=False)
        assert done_count(rundir) == 12, rundir.driver_job_output(second).read_text()
        assert np.array_equal(run_output(rundir, run["scene"].window), reference)
        log = rundir.driver_job_output(second).read_text()
        resumed = re.search(r"^0: chunks planned: 12, already done: (\d+)$", log, re.M)  # a resume
        assert resumed and before <= int(resumed[1]) < 12, log
        assert re.search(r"^1: .*Start worker at:\s+tls://127\.0\.0\.1:", log, re.M), log
        # Once more on the finished run: the driver starts no cluster, and its worker task does not wait
        # for one until the walltime.
        third = submit(req)
        try:
            wait_until(lambda: ended(third), 120, f"ended (job {third}: a worker task waiting for ever?)")
        finally:
            subprocess.run(["scancel", third], check=False)
        assert (rundir.root / ".dask-runner" / f"{third}.ended").exists()
        assert "chunks planned: 12, already done: 12" in rundir.driver_job_output(third).read_text()
