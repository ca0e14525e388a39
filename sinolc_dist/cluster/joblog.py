"""Worker jobs' arrivals, losses and retirements in the driver's log, by their job ids.

A scheduler plugin on the driver's own scheduler (dask-jobqueue and LocalCluster
both run it in the driver's process): each worker that connects, is lost (its
job killed, pre-empted, out of walltime) or retires (its ``--lifetime``, or
adaptive scaling) is one line naming its batch job, its Dask address and its
process, so the ``host:pid`` of a chunk's record leads to the job.  Lost and
lifetime-retired workers go to ``gone``, where the next worker job's
submission finds the one it replaces (:func:`sinolc_dist.cluster.jobstatus.watched`).
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

log = logging.getLogger("sinolc_dist.cluster.core")

#: How a worker left, by the start of the scheduler's stimulus id (anything else: lost).
_LEFT = {"worker-close-gracefully": "retired (its --lifetime ran out, before the job's walltime)",
         "retire-workers": "retired by adaptive scaling"}


class JobLog(SchedulerPlugin):
    """Logs each worker of ``cluster`` that connects or leaves, named by its batch job.

    ``closing`` is set before the cluster closes: the workers it stops are not
    reported lost.
    """

    name = "sinolc-job-log"

    def __init__(self, cluster: Any, kind: str, gone: list[str]) -> None:
        self.cluster, self.kind, self.gone = cluster, kind, gone
        self.names: dict[str, str] = {}  # address → what the log calls the worker
        self.closing = False

    def job_of(self, worker_name: str) -> str:
        """``<kind> job <id>`` of a Dask worker's name (``<spec>`` or ``<spec>-<i>``), else the name."""
        for spec, job in list(self.cluster.workers.items()):
            if worker_name == str(spec) or worker_name.startswith(f"{spec}-"):
                job_id = getattr(job, "job_id", None)
                return f"{self.kind} job {job_id}" if job_id else f"{self.kind} worker {spec}"
        return f"{self.kind} worker {worker_name}"

    def add_worker(self, scheduler: Any, worker: str) -> None:
        """Log the arrival: the job, the worker's address, host and pid."""
        ws = scheduler.workers[worker]
        self.names[worker] = name = self.job_of(str(ws.name))
        log.info("%s connected: worker %s (pid %s on %s)", name, worker, ws.pid, ws.host)

    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str, **kwargs: Any) -> None:
        """Log the departure: retired (lifetime, adaptive scaling) or lost (the rest)."""
        name = self.names.pop(worker, f"{self.kind} worker {worker}")
        if self.closing:
            return
        how = next((words for start, words in _LEFT.items() if stimulus_id.startswith(start)), None)
        if how:
            log.info("%s %s: worker %s", name, how, worker)
        else:
            log.warning("%s lost: worker %s left without retiring (job killed, pre-empted or out of "
                        "walltime?); its chunks in flight are retried", name, worker)
        if how != _LEFT["retire-workers"]:  # adaptive scaling replaces the others
            self.gone.append(name)
