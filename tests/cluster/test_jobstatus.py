"""What the scheduler says about worker jobs: dead jobs, their logs, refusals, the first submission."""

from __future__ import annotations

import logging
import os
import time
from types import SimpleNamespace

import pytest

from sinolc_dist.cluster.jobstatus import (
    DeadJob,
    _scheduler_words,
    await_submission,
    dead_jobs,
    job_logs,
    log_tail,
)
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.errors import ConfigError


class _Statuses:
    """A scheduler whose job states are given, with the real one's hints."""

    def __init__(self, kind: str, states: dict[str, tuple[str, str]]) -> None:
        self.real, self.states, self.kind = scheduler(kind), states, kind
        self.asked: list[str] = []

    def job_status(self, job_id: str) -> tuple[str, str]:
        self.asked.append(job_id)
        return self.states[job_id]

    def hint(self, message: str, settings: dict | None = None) -> str:
        return self.real.hint(message, settings)


def _cluster(jobs: dict[str, str], log_directory: str | None = None, connected: tuple[str, ...] = ()):
    workers = {name: SimpleNamespace(job_id=job_id, log_directory=log_directory)
               for name, job_id in jobs.items()}
    info = {"workers": {f"tls://w{i}": {"name": n} for i, n in enumerate(connected)}}
    return SimpleNamespace(workers=workers, scheduler_info=info)


def test_job_logs_are_the_non_empty_files_naming_the_job_newest_last(tmp_path):
    (tmp_path / "w-17.err").write_text("old")
    (tmp_path / "w-17.out").write_text("new")
    os.utime(tmp_path / "w-17.err", (time.time() - 60, time.time() - 60))
    (tmp_path / "w-170.err").write_text("another job")
    (tmp_path / "w-17.log").write_text("")
    assert [p.name for p in job_logs(str(tmp_path), "17")] == ["w-17.err", "w-17.out"]
    assert job_logs(None, "17") == [] and job_logs(str(tmp_path / "none"), "17") == []


def test_log_tail_quotes_the_newest_log_on_one_line(tmp_path):
    path = tmp_path / "w-3.err"
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    assert log_tail([path], lines=2) == f"{path} ends: line 8 | line 9"
    assert log_tail([]) == ""


def test_dead_job_describes_itself_with_the_key_to_change():
    dead = DeadJob("0", "41", "ended", "JobState=FAILED ExitCode=1:0",
                   "/l/w-41.err ends: No module named torch")
    text = dead.describe(scheduler("slurm"), {"job_script_prologue": ["conda activate x"]})
    assert text == ("worker job 41 ended before its Dask worker connected: JobState=FAILED ExitCode=1:0; "
                    "its log /l/w-41.err ends: No module named torch; change the slurm profile's "
                    "'job_script_prologue' (the modules and environment the worker's Python needs) "
                    "(now job_script_prologue: ['conda activate x'])")
    held = DeadJob("0", "42", "error", "can't chdir to /x", "")
    assert held.describe(scheduler("sge"), {}).startswith("worker job 42 is in an error state before")


def test_dead_jobs_skip_alive_connected_and_once_registered_jobs(tmp_path):
    (tmp_path / "w-3.err").write_text("Registered to: tls://127.0.0.1:1\n")  # it connected, then went
    sched = _Statuses("slurm", {"1": ("alive", "RUNNING"), "3": ("ended", "JobState=COMPLETED"),
                                "4": ("ended", "JobState=FAILED"), "5": ("error", "held")})
    cluster = _cluster({"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}, str(tmp_path), connected=("b-0",))
    dead = dead_jobs(cluster, sched)
    assert [(d.name, d.job_id, d.state, d.said) for d in dead] == [("d", "4", "ended", "JobState=FAILED"),
                                                                   ("e", "5", "error", "held")]
    assert "2" not in sched.asked  # its worker is connected: the scheduler is not asked
    assert len(dead_jobs(cluster, sched, limit=1)) == 1


def test_scheduler_words_from_a_failed_submission():
    exc = RuntimeError("Command exited with non-zero exit code.\nExit code: 1\nCommand:\nsbatch x\n"
                       "stdout:\n\nstderr:\nsbatch: error: invalid partition\n  specified\n")
    assert _scheduler_words(exc) == "sbatch: error: invalid partition specified"
    wrapped = RuntimeError("stdout:\nqsub: The job was rejected and the output was: 'sbatch: error: "
                           "Invalid account'\nstderr:\n\n")
    assert _scheduler_words(wrapped) == "sbatch: error: Invalid account"


def _submitting(refusals=(), submitted=(), workers=None, jobs=None):
    job_cls = SimpleNamespace(refusals=list(refusals), submitted=list(submitted), submit_command="qsub")
    cluster = _cluster(jobs or {})
    cluster.job_cls = job_cls
    cluster.scheduler_info = {"workers": workers or {}}
    return cluster


def test_first_refusal_is_a_config_error_naming_the_key():
    cluster = _submitting(refusals=['Unable to run job: unknown resource "gpu"'])
    with pytest.raises(ConfigError) as err:
        await_submission(cluster, scheduler("sge"), {"resource_spec": "gpu=1"}, timeout=5)
    assert str(err.value) == ("`qsub` refused the worker job: Unable to run job: unknown resource \"gpu\"; "
                              "change the sge profile's 'gpus_per_job' or 'resource_spec' (gpu=) "
                              "(now resource_spec: 'gpu=1') "
                              "(`sinolc-dist submit --dry-run` prints the job script)")


def test_first_job_dead_at_start_is_a_config_error():
    cluster = _submitting(submitted=["9"], jobs={"0": "9"})
    sched = _Statuses("pbs", {"9": ("ended", "job_state = C; exit_status = 1")})
    with pytest.raises(ConfigError, match=r"^worker job 9 ended before its Dask worker connected: "
                                          r"job_state = C; exit_status = 1; check the pbs profile's"):
        await_submission(cluster, sched, {}, timeout=5)


def test_a_connected_worker_or_a_queued_job_is_no_error(caplog):
    caplog.set_level(logging.INFO, logger="sinolc_dist.cluster.core")
    await_submission(_submitting(workers={"tls://w": {}}), scheduler("slurm"), {}, timeout=5)
    queued = _submitting(submitted=["7"], jobs={"0": "7"})
    await_submission(queued, _Statuses("slurm", {"7": ("alive", "PENDING")}), {}, timeout=1.2)
    assert "worker job(s) 7 not started after 1 s (queued); going on" in caplog.text
