"""What the scheduler says about worker jobs, in words a user can act on.

A refused submission or a job that dies before its worker connects becomes an
error quoting the scheduler's own message (``scontrol``, ``qstat``, ``qacct``,
the job's log) and naming the profile key to change.
"""


from __future__ import annotations

import logging
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dask_jobqueue.core import Job
from distributed.core import Status

log = logging.getLogger("sinolc_dist.cluster.core")
_ALL = ("slurm", "pbs", "sge")
#: What a scheduler's message is about → the profile key(s) to change, per kind (first match wins).
_CAUSES: list[tuple[str, dict[str, str]]] = [
    (r"no suitable queues", {"sge": "'queue', 'resource_spec' or the -pe line of 'job_extra_directives'"}),
    (r"unknown queue|no such queue|invalid queue|invalid partition|partition .*(invalid|unknown|not)",
     dict.fromkeys(_ALL, "'queue'")),
    (r"enforced h_rt", {"sge": "'walltime' (h_rt) or 'resource_spec' (h_vmem, h_cpu)"}),
    (r"parallel environment", {"sge": "'job_extra_directives' (the -pe line)"}),
    (r"gres|gpu|accelerator", {"slurm": "'job_extra_directives' (the --gres/--gpus line)",
                               "pbs": "'resource_spec' (ngpus=, or gpus= in the Torque form)",
                               "sge": "'resource_spec' (gpu=)"}),
    (r"memory|mem=|h_vmem|mem_free|out_of_memory|memoryerror",
     {"slurm": "'memory'", "pbs": "'resource_spec' (mem=) and 'memory'",
      "sge": "'resource_spec' (h_vmem=/mem_free=) and 'memory'"}),
    (r"cpu count|ncpus|ppn|cpus", {"slurm": "'job_cpu' and 'cores'", "pbs": "'resource_spec' (ncpus=, ppn=)",
                                   "sge": "the -pe line of 'job_extra_directives'"}),
    (r"time limit|walltime|h_rt|timeout", dict.fromkeys(_ALL, "'walltime'")),
    (r"account|allocation", {"slurm": "'account'", "pbs": "'account'", "sge": "'project'"}),
    (r"project", {"slurm": "'account'", "pbs": "'account'", "sge": "'project'"}),
    (r"\bqos\b", {"slurm": "'job_extra_directives' (the --qos line)"}),
    (r"partition|queue", dict.fromkeys(_ALL, "'queue'")),
    (r"resource", {"slurm": "'job_extra_directives'", "pbs": "'resource_spec'", "sge": "'resource_spec'"}),
    (r"chdir|working directory", dict.fromkeys(_ALL, (
        "'job_extra_directives' (the job's working directory: it must exist on the compute nodes; "
        "Grid Engine jobs start in the driver's directory unless -wd says otherwise)"))),
    (r"output file|error file|can't open", dict.fromkeys(_ALL, "'log_directory' (it must exist on the "
                                                               "compute nodes)")),
    (r"not found|no module named|no such file", dict.fromkeys(_ALL, (
        "'job_script_prologue' (the modules and environment the worker's Python needs)"))),
]


def profile_hint(kind: str, message: str, settings: dict[str, Any] | None = None) -> str:
    """Which key of a ``kind`` profile a scheduler's message points at, with its current value.

    A guess from the message's words (a partition or queue → ``queue``, memory →
    ``memory``/``resource_spec``…); messages it cannot place get the usual suspects.
    """
    low = message.lower()
    for pattern, keys in _CAUSES:
        if kind in keys and re.search(pattern, low):
            now = [f"{k}: {settings[k]!r}" for k in dict.fromkeys(re.findall(r"'(\w+)'", keys[kind]))
                   if settings and settings.get(k) is not None]
            return f"change the {kind} profile's {keys[kind]}" + (f" (now {', '.join(now)})" if now else "")
    account = "project" if kind == "sge" else "account"
    return (f"check the {kind} profile's queue, {account}, memory, walltime, resource_spec and "
            "job_extra_directives")


def job_status(kind: str, job_id: str) -> tuple[str, str]:
    """Whether a batch job still waits or runs (``"alive"``), has ended, or is stuck in error.

    Returns the state and the scheduler's own words about the job: SLURM's
    ``scontrol show job`` (state, reason, exit code), PBS's ``qstat -f`` (job
    state, exit status, comment), Grid Engine's ``qstat -j`` (the error reason
    of a job in state E) or, once it ended, ``qacct -j`` (failed, exit status).
    """
    def call(*cmd: str) -> tuple[int, str]:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 1, str(exc)
        return proc.returncode, proc.stdout + proc.stderr

    if kind == "slurm":
        rc, out = call("scontrol", "show", "job", "-o", job_id)
        state = re.search(r"JobState=(\S+)", out)
        if rc or state is None:
            return "ended", " ".join(out.split()) or "no longer known to SLURM"
        if state[1] in ("PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING"):
            return "alive", state[1]
        return "ended", " ".join(m[0] for m in re.finditer(r"(JobState|Reason|ExitCode)=\S+", out))
    if kind == "pbs":
        rc, out = call("qstat", "-f", job_id)
        state = re.search(r"job_state = (\w)", out)
        if rc or state is None:
            return "ended", " ".join(out.split()) or "no longer known to the PBS server"
        if state[1] in "QHWTSRBU":
            return "alive", f"job_state = {state[1]}"
        return "ended", "; ".join(m[0].strip() for m in
                                  re.finditer(r"(job_state|exit_status|Exit_status|comment) = .*", out))
    rc, out = call("qstat", "-j", job_id)
    if rc == 0 and "do not exist" not in out:
        error = re.search(r"error reason\s+\d+:\s*(?:\S+ \S+ \[[^\]]*\]:\s*)?(.*)", out)
        return ("error", error[1].strip()) if error else ("alive", "")
    rc, acct = call("qacct", "-j", job_id)
    newest = acct.split("=" * 20)[-1] if rc == 0 else ""  # one record per run of this id
    words = "; ".join(" ".join(m[0].split()) for m in re.finditer(r"^(failed|exit_status) .*$", newest, re.M))
    return "ended", words or "no longer known to the Grid Engine qmaster"


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

    def describe(self, kind: str, settings: dict[str, Any]) -> str:
        """One line: the job, the scheduler's words, its log's last lines, the profile key to change."""
        what = "is in an error state" if self.state == "error" else "ended"
        hint = profile_hint(kind, f"{self.said} {self.tail.partition(' ends: ')[2]}", settings)
        return (f"worker job {self.job_id} {what} before its Dask worker connected: {self.said}"
                + (f"; its log {self.tail}" if self.tail else "") + f"; {hint}")


def dead_jobs(cluster: Any, kind: str, limit: int = 4) -> list[DeadJob]:
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
        state, said = job_status(kind, job_id)
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


def watched(job_cls: type[Job], kind: str) -> type[Job]:
    """``job_cls`` recording each submission's outcome (adaptive scaling would only log it)."""

    class Watched(job_cls):  # type: ignore[misc,valid-type]
        submitted: ClassVar[list[str]] = []
        refusals: ClassVar[list[str]] = []
        gone: ClassVar[list[str]] = []  # lost or retired workers to replace (sinolc_dist.cluster.joblog)

        async def _submit_job(self, script_filename: str) -> str:
            # qsub runs in the log directory: SLURM's PBS wrappers (slurm-wlm-torque) put the
            # job's output there (<script>.o<id>/.e<id>), their own -o/-e overriding the
            # script's #PBS lines. For a real PBS server the directory changes only PBS_O_WORKDIR.
            cwd = self.log_directory if kind == "pbs" and self.log_directory else None
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
            log.info("%s worker job %s submitted (%s)%s", kind, self.job_id, self.submit_command, replacing)

        async def close(self) -> None:
            await super().close()
            # dask-jobqueue leaves a deleted job "running"; SpecCluster.close() asserts that every
            # job it made and that is still referenced (a traceback suffices) is closed or failed.
            self.status = Status.closed

    Watched.__name__ = Watched.__qualname__ = job_cls.__name__
    return Watched
