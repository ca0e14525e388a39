"""The watchdog replaces worker jobs that die before connecting, and stops a run whose jobs all do."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest

from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.cluster.watchdog import JobWatchdog, RunStopped


class _Dying:
    """A SLURM whose every job has failed (the real one's hints)."""

    kind = "slurm"

    def job_status(self, job_id: str) -> tuple[str, str]:
        return "ended", "JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0"

    def hint(self, message: str, settings: dict | None = None) -> str:
        return scheduler("slurm").hint(message, settings)


class _Cluster:
    """Worker jobs by name; ``scale_down`` removes one, as adaptive scaling then replaces it."""

    def __init__(self, jobs: dict[str, str], workers: dict | None = None) -> None:
        self.workers = {n: SimpleNamespace(job_id=j, log_directory=None) for n, j in jobs.items()}
        self.scheduler_info = {"workers": workers or {}}
        self.scaled_down: list[str] = []

    def scale_down(self, names: list[str]) -> None:
        self.scaled_down += names
        for name in names:
            self.workers.pop(name)

    def sync(self, func, *args):
        return func(*args)


def test_dead_jobs_are_scaled_down_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="sinolc_dist.cluster.core")
    cluster = _Cluster({"0": "11", "1": "12"}, workers={"tls://a": {"name": "2"}})
    watchdog = JobWatchdog(cluster, _Dying(), {"give_up_after": 5})
    assert watchdog.check() is False
    assert cluster.scaled_down == ["0", "1"] and watchdog.deaths == 2
    assert "worker job 11 ended before its Dask worker connected: JobState=FAILED" in caplog.text
    assert "submitting a replacement (2 such job(s) since a worker was last seen)" in caplog.text


def test_gives_up_after_enough_deaths_with_no_worker():
    cluster = _Cluster({"0": "11"})
    watchdog = JobWatchdog(cluster, _Dying(), {"give_up_after": 2})
    assert watchdog.check() is False
    cluster.workers["1"] = SimpleNamespace(job_id="12", log_directory=None)  # the replacement dies too
    assert watchdog.check() is True
    assert watchdog.failure.startswith("2 slurm worker jobs died before their Dask workers connected, "
                                       "the last one: worker job 12 ended")
    assert watchdog.failure.endswith("fix the profile and run again to resume)")


def test_a_connected_worker_resets_the_count():
    cluster = _Cluster({"0": "11"})
    watchdog = JobWatchdog(cluster, _Dying(), {"give_up_after": 2})
    watchdog.check()
    cluster.scheduler_info["workers"] = {"tls://a": {"name": "5"}}
    cluster.workers["1"] = SimpleNamespace(job_id="12", log_directory=None)
    assert watchdog.check() is False and watchdog.deaths == 1


def test_giving_up_interrupts_the_driver_in_the_main_thread():
    assert threading.current_thread() is threading.main_thread()
    watchdog = JobWatchdog(_Cluster({"0": "11"}), _Dying(), {"give_up_after": 1, "watch_interval": 0.05})
    start = time.monotonic()

    def work() -> None:  # the driver's work, in short steps: the interrupt comes between two
        while time.monotonic() - start < 10:
            time.sleep(0.05)

    with pytest.raises(RunStopped, match="1 slurm worker jobs died"), watchdog:
        work()
    assert time.monotonic() - start < 5
