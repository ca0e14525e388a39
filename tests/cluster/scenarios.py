"""The scenarios every batch scheduler must pass on a real scheduler: one contract, a subclass each.

A run through the scheduler equals the LocalCluster reference (``reference`` in
tests/conftest.py) with every socket on loopback; a worker job killed mid-run
costs no chunk and is replaced; the driver submitted with ``sinolc-dist submit``
completes with the reference; a refused queue and a job dying at start are each
one clear :class:`ConfigError` quoting the scheduler and naming the profile key.
A subclass (``TestSlurm``, ``TestPbs``, ``TestSge``) gives only what differs: its
profile, how it lists, kills and names jobs, and the scheduler's own words.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import dask
import numpy as np
import psutil
import pytest
import yaml
from conftest import WORKFLOW, done_count, kill_busiest_worker_once, prepared_run, run_output
from distributed import get_client

from sinolc_dist.audit.report import audit
from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages import infer


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of these processes."""
    return [(c.laddr.ip, c.laddr.port) for pid in pids
            for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]


def workers_listening(client) -> dict[str, tuple[list[tuple[str, int]], int]]:
    """Each worker's listening sockets (its process and its nanny's) and its dashboard's port."""
    def own(dask_worker) -> tuple[list[tuple[str, int]], int]:
        import os

        import psutil
        pids = [os.getpid(), os.getppid()]
        socks = [(c.laddr.ip, c.laddr.port) for pid in pids
                 for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        return socks, dask_worker.http_server.port

    return client.run(own)


def new_job_name() -> str:
    """A job name unique to one test (or one class's shared run)."""
    return f"sinolc-t{uuid.uuid4().hex[:8]}"


class SchedulerContract:
    """The scenarios of a batch scheduler; subclasses set the class attributes and the hooks below."""

    #: The scheduler's kind (the profile's top-level key).
    kind: ClassVar[str]
    #: The command that deletes a job by id.
    kill_command: ClassVar[list[str]]
    #: The command that submits jobs, as the errors quote it.
    submit_command: ClassVar[str] = "qsub"
    #: The driver job's queue (``--driver-queue``).
    driver_queue: ClassVar[str]
    #: The scheduler's words when a worker job asks for the queue ``nope``.
    refused_queue_said: ClassVar[str]
    #: Profile settings whose first worker job dies at start, what the error quotes, the key it names.
    dying_start: ClassVar[dict[str, Any]]
    dying_said: ClassVar[str]
    dying_key: ClassVar[str]
    #: The scheduler's words about a driver job that succeeded.
    driver_success: ClassVar[tuple[str, ...]] = ()
    #: Whether the shared run names its run directory relative to the current directory.
    relative_run_dir: ClassVar[bool] = False

    # ---------------------------------------------------------------- what a scheduler gives
    def settings(self, job_name: str, **extra: object) -> dict[str, Any]:
        """The profile of the scheduler on this machine, named ``job_name``."""
        raise NotImplementedError

    def running(self, job_name: str) -> list[str]:
        """Ids of the running jobs called ``job_name``."""
        raise NotImplementedError

    def worker_logs(self, rundir: RunDir, job_name: str) -> dict[str, str]:
        """Job id → the text of that worker job's logs in ``logs/workers``."""
        raise NotImplementedError

    def cancel_all(self, job_name: str) -> None:
        """Delete every job called ``job_name``, whatever state it is in."""
        raise NotImplementedError

    def settled(self, said: str) -> bool:
        """Whether the scheduler's words about an ended job are final (some come a moment later)."""
        return True

    def assert_no_job_left(self, job_name: str) -> None:
        """After a failed start: no job of that name runs (or waits in an error state)."""
        assert not self.running(job_name)

    # ---------------------------------------------------------------- shared helpers
    def profile(self, folder: Path, job_name: str, **extra: object) -> str:
        """The profile written as a YAML file in ``folder``."""
        path = folder / f"{self.kind}-test.yaml"
        path.write_text(yaml.safe_dump({self.kind: self.settings(job_name, **extra)}))
        return str(path)

    def refusal(self, run_dir: Path, job_name: str, **extra: object) -> str:
        """The ConfigError's text when a cluster of this profile starts (it must fail)."""
        with pytest.raises(ConfigError) as err, open_cluster(self.kind, self.settings(job_name, **extra),
                                                             run_dir):
            pass
        return str(err.value)

    def ended(self, job_id: str, timeout: float) -> str:
        """The scheduler's final words about a job once it has left the queue."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, said = scheduler(self.kind).job_status(job_id)
            if state != "alive" and self.settled(said):
                return said
            time.sleep(1)
        raise AssertionError(f"job {job_id} still queued or running after {timeout} s")

    @pytest.fixture
    def job_name(self) -> Iterator[str]:
        """A job name unique to the test; its jobs are deleted afterwards, whatever happened."""
        name = new_job_name()
        yield name
        self.cancel_all(name)

    @pytest.fixture(scope="class")
    @classmethod
    def shared_run(cls, tmp_path_factory, random_checkpoint) -> dict[str, Any]:
        """One run of the small scene through the scheduler, looked at mid-run, for several scenarios."""
        self = cls()
        tmp = tmp_path_factory.mktemp(f"{self.kind}-run")
        run = prepared_run(tmp, WORKFLOW % random_checkpoint)
        name = new_job_name()
        req = replace(run["req"], cluster=self.profile(tmp, name), mosaic=False)
        seen: dict[str, Any] = {}

        def look(report, total) -> None:  # mid-run: the driver (this process) and each worker job
            if report.done and not seen:
                seen["workers"] = workers_listening(get_client())
                seen["driver"] = listening([os.getpid()])

        with pytest.MonkeyPatch.context() as mp:
            if self.relative_run_dir:
                mp.chdir(tmp)
                req = replace(req, run_dir=Path(run["rundir"].root.name))
            try:
                summary = infer.run(req, on_progress=look)
            finally:
                self.cancel_all(name)
        # As the run left it (a later run in this process may add to it: the driver's log handler stays).
        log = (run["rundir"].logs / "driver.log").read_text()
        return {**run, "summary": summary, "seen": seen, "job_name": name, "log": log}

    # ---------------------------------------------------------------- the scenarios
    def test_run_equals_the_local_reference(self, shared_run, reference):
        rundir, summary = shared_run["rundir"], shared_run["summary"]
        assert summary.report.done == 12 and summary.report.failed == 0 and done_count(rundir) == 12
        assert np.array_equal(run_output(rundir, shared_run["scene"].window), reference)
        assert summary.dashboard.startswith("http://127.0.0.1:")

    def test_workers_ran_as_batch_jobs_that_computed_every_chunk(self, shared_run):
        rundir = shared_run["rundir"]
        logs = self.worker_logs(rundir, shared_run["job_name"])
        started = [job for job, text in logs.items()
                   if re.search(r"Start worker at:\s+tls://127\.0\.0\.1:", text)]
        assert len(started) >= 2, logs  # the workers ran as batch jobs, over TLS on loopback
        with closing(sqlite3.connect(rundir.state)) as db:  # each chunk's record names its job
            workers = {w for (w,) in db.execute("SELECT worker FROM chunks")}
        assert workers and all(re.fullmatch(r"job (\d+) on .+:\d+", w)[1] in logs for w in workers), workers

    def test_every_listening_socket_of_a_run_is_on_loopback(self, shared_run):
        seen = shared_run["seen"]
        workers = seen["workers"]
        assert len(workers) == 2 and seen["driver"], seen
        for socks, dashboard in workers.values():
            assert len(socks) >= 3 and dashboard in {port for _, port in socks}  # nanny, worker, dashboard
        ips = {ip for socks, _ in workers.values() for ip, _ in socks} | {ip for ip, _ in seen["driver"]}
        assert ips == {"127.0.0.1"}, seen

    def test_killed_worker_job_is_replaced(self, small_run_one_chunk_tasks, reference, tmp_path, job_name):
        small_run = small_run_one_chunk_tasks
        rundir, scene = small_run["rundir"], small_run["scene"]
        req = replace(small_run["req"], cluster=self.profile(tmp_path, job_name), mosaic=False)
        seen: dict[str, Any] = {}

        def job_of(address: str) -> str:  # the job a worker runs in, from its logs
            return next(job for job, text in self.worker_logs(rundir, job_name).items() if address in text)

        kill = kill_busiest_worker_once(seen, job_of, self.kill_command, lambda: self.running(job_name))
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
            infer.run(req, on_progress=kill)
        assert seen["in_flight"] and seen["replacement"], seen
        assert seen["killed"] not in self.running(job_name)
        assert done_count(rundir) == 12
        assert np.array_equal(run_output(rundir, scene.window), reference)
        log = (rundir.logs / "driver.log").read_text()  # the loss and the replacement, by job id
        killed, new = seen["killed"], seen["replacement"][0]
        assert re.search(rf"{self.kind} job {killed} lost: worker tls://127\.0\.0\.1:\d+ left", log), log
        assert (f"{self.kind} worker job {new} submitted ({self.submit_command}), "
                f"replacing {self.kind} job {killed}") in log, log

    def test_driver_submitted_as_a_job_equals_the_reference(self, small_run, reference, tmp_path, job_name):
        rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
        proc = subprocess.run(
            [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "submit",
             "--region", req.region, "--workflow", req.workflow,
             "--cluster", self.profile(tmp_path, job_name), "--run-dir", str(rundir.root),
             "--driver-walltime", "00:20:00", "--driver-queue", self.driver_queue],
            capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        job_id = re.search(r"driver job: (\d+)", proc.stdout)[1]
        log_path = rundir.driver_job_output(job_id)
        assert f"log: {log_path}" in proc.stdout
        try:
            said = self.ended(job_id, timeout=300)
        finally:
            subprocess.run([*self.kill_command, job_id], capture_output=True, check=False)
        log = log_path.read_text()
        assert log.startswith(f"sinolc-dist driver: job {job_id} on "), log
        assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", log), log
        assert "inference: 12 chunk(s) done" in log and "mosaic: " in log, (said, log)
        for words in self.driver_success:
            assert words in said, said
        assert np.array_equal(run_output(rundir, scene.window), reference)
        cogs = list(rundir.mosaics.glob("*.tif"))  # the mosaics written on the scheduler's workers
        assert cogs and all(audit(cog).findings == 0 for cog in cogs), [audit(c).to_dict() for c in cogs]

    def test_refused_queue_is_one_clear_error(self, tmp_path, job_name):
        text = self.refusal(tmp_path, job_name, queue="nope", minimum_jobs=1, maximum_jobs=1)
        assert f"`{self.submit_command}` refused the worker job: " in text, text
        assert self.refused_queue_said in text and "\n" not in text, text
        assert f"change the {self.kind} profile's 'queue' (now queue: 'nope')" in text, text
        assert not self.running(job_name)

    def test_job_dying_at_start_is_one_clear_error(self, tmp_path, job_name):
        text = self.refusal(tmp_path, job_name, minimum_jobs=1, maximum_jobs=1, **self.dying_start)
        assert self.dying_said in text and "\n" not in text, text
        assert f"change the {self.kind} profile's {self.dying_key}" in text, text
        self.assert_no_job_left(job_name)
