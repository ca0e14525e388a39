"""What the scheduler says about worker jobs, in words a user can act on.

A refused submission or a job that dies before its worker connects becomes an
error quoting the scheduler's own message (``scontrol``, ``qstat``, ``qacct``,
the job's log) and naming the profile key to change.
"""


from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from distributed.core import Status

from sinolc_dist.errors import ConfigError

if TYPE_CHECKING:
    from dask_jobqueue.core import Job

    from sinolc_dist.cluster.scheduler import BatchScheduler

log = logging.getLogger("sinolc_dist.cluster.core")
#: Seconds to wait for the first worker job to be accepted (or refused) by the scheduler.
SUBMIT_WAIT = 30.0


def job_logs(log_directory: str | None, job_id: str) -> list[Path]:
    """A job's non-empty log files, newest last (their names carry the job id)."""
    if not log_directory or not Path(log_directory).is_dir():
        return []
    files = [p for p in Path(log_directory).iterdir() if p.is_file() and p.stat().st_size
             and re.search(rf"(?<![0-9]){re.escape(job_id)}(?![0-9])", p.name)]
    return sorted(files, key=lambda p: p.stat().st_mtime)


def log_tail(logs: list[Path], lines: int = 6) -> str:
    """``<file> ends: <its last lines>`` of the newest of a job's log files."""
    if not logs:
        return ""
    tail = logs[-1].read_text(errors="replace").strip().splitlines()[-lines:]
    return f"{logs[-1]} ends: " + " | ".join(line.strip() for line in tail)


@dataclass(frozen=True)
class DeadJob:
    """A worker job that ended (or went into an error state) before its Dask worker connected."""

    name: str
    job_id: str
    state: str
    said: str
    tail: str

    def describe(self, scheduler: BatchScheduler, settings: dict[str, Any]) -> str:
        """One line: the job, the scheduler's words, its log's last lines, the profile key to change."""
        what = "is in an error state" if self.state == "error" else "ended"
        hint = scheduler.hint(f"{self.said} {self.tail.partition(' ends: ')[2]}", settings)
        return (f"worker job {self.job_id} {what} before its Dask worker connected: {self.said}"
                + (f"; its log {self.tail}" if self.tail else "") + f"; {hint}")


def dead_jobs(cluster: Any, scheduler: BatchScheduler, limit: int = 4) -> list[DeadJob]:
    """Up to ``limit`` of the cluster's worker jobs that died before their worker connected.

    dask-jobqueue counts such a job as requested for ever, so adaptive scaling
    never replaces it.  A job whose log shows that its worker did connect (and
    has gone since: retired, killed) is not one of them.
    """
    jobs = dict(cluster.workers)  # the cluster's event loop changes the dict meanwhile
    connected = {str(w.get("name", "")) for w in cluster.scheduler_info.get("workers", {}).values()}
    found: list[DeadJob] = []
    for name, job in jobs.items():
        job_id = str(getattr(job, "job_id", None) or "")
        if not job_id or any(c == str(name) or c.startswith(f"{name}-") for c in connected):
            continue
        state, said = scheduler.job_status(job_id)
        if state == "alive":
            continue
        logs = job_logs(getattr(job, "log_directory", None), job_id)
        if any("Registered to:" in p.read_text(errors="replace") for p in logs):
            continue
        found.append(DeadJob(str(name), job_id, state, said, log_tail(logs)))
        if len(found) >= limit:
            break
    return found


def _scheduler_words(exc: BaseException) -> str:
    """What the scheduler said in a failed submission, on one line.

    dask-jobqueue's error holds the command's stdout and stderr; stderr is the
    scheduler's message, except for SLURM's PBS wrappers, which print sbatch's
    words to stdout inside a report of their own ("… and the output was: '…'").
    """
    text = str(exc)
    m = re.search(r"stdout:\n(.*?)\nstderr:\n(.*)", text, re.S)
    said = (m[2].strip() or m[1].strip()) if m else text
    wrapped = re.search(r"and the output was:\s*'(.*)'", said, re.S)
    return " ".join((wrapped[1] if wrapped else said).split())


def watched(job_cls: type[Job], scheduler: BatchScheduler) -> type[Job]:
    """``job_cls`` recording each submission's outcome (adaptive scaling would only log it)."""

    class Watched(job_cls):  # type: ignore[misc,valid-type]
        submitted: ClassVar[list[str]] = []
        refusals: ClassVar[list[str]] = []
        gone: ClassVar[list[str]] = []  # lost or retired workers to replace (sinolc_dist.cluster.joblog)

        async def _submit_job(self, script_filename: str) -> str:
            # qsub runs in the log directory: SLURM's PBS wrappers (slurm-wlm-torque) put the
            # job's output there (<script>.o<id>/.e<id>), their own -o/-e overriding the
            # script's #PBS lines. For a real PBS server the directory changes only PBS_O_WORKDIR.
            cwd = self.log_directory if scheduler.submit_in_log_directory and self.log_directory else None
            return await self._call([*shlex.split(self.submit_command), script_filename], cwd=cwd)

        async def start(self) -> None:
            try:
                await super().start()
            except (RuntimeError, ValueError) as exc:
                type(self).refusals.append(_scheduler_words(exc))
                self.status = Status.failed  # SpecCluster.close() asserts a started job's status
                raise
            type(self).submitted.append(str(self.job_id))
            replacing = f", replacing {type(self).gone.pop(0)}" if type(self).gone else ""
            log.info("%s worker job %s submitted (%s)%s", scheduler.kind, self.job_id, self.submit_command,
                     replacing)

        async def close(self) -> None:
            await super().close()
            # dask-jobqueue leaves a deleted job "running"; SpecCluster.close() asserts that every
            # job it made and that is still referenced (a traceback suffices) is closed or failed.
            self.status = Status.closed

    Watched.__name__ = Watched.__qualname__ = job_cls.__name__
    return Watched


def await_submission(cluster: Any, scheduler: BatchScheduler, settings: dict[str, Any],
                     timeout: float = SUBMIT_WAIT) -> None:
    """Wait for the first worker; raise, quoting the scheduler, if its job was refused or died.

    A refused submission (unknown queue, a resource the scheduler rejects) and a
    job that ended or went into an error state before its worker connected (the
    scheduler killed it at start) are :class:`ConfigError` naming the profile key
    to change.  Jobs still queued after ``timeout`` are left to wait: a busy
    cluster is not an error.
    """
    job_cls = cluster.job_cls
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if job_cls.refusals:
            said = job_cls.refusals[0]
            raise ConfigError(
                f"`{job_cls.submit_command}` refused the worker job: {said}; "
                f"{scheduler.hint(said, settings)} "
                "(`sinolc-dist submit --dry-run` prints the job script)"
            )
        if cluster.scheduler_info.get("workers"):
            return
        if job_cls.submitted and time.monotonic() >= next_check:
            dead = dead_jobs(cluster, scheduler, limit=1)
            if dead and not cluster.scheduler_info.get("workers"):
                raise ConfigError(f"{dead[0].describe(scheduler, settings)} "
                                  "(`sinolc-dist submit --dry-run` prints the job script)")
            next_check = time.monotonic() + 2.0
        time.sleep(0.1)
    if job_cls.submitted:
        log.info("%s worker job(s) %s not started after %.0f s (queued); going on", scheduler.kind,
                 " ".join(job_cls.submitted), timeout)
    else:
        log.warning("no %s worker job submitted after %.0f s; going on", scheduler.kind, timeout)
