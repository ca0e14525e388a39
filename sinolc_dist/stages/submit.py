"""The driver itself as a batch job: ``sinolc-dist submit``.

A national run lasts days, and its driver (``sinolc-dist run``: the Dask
scheduler, the state database, the mosaics) should not live in a login shell.
:func:`render_driver_script` writes the batch script that runs the driver on a
compute node (small resources, long walltime, the cluster profile's prologue);
:func:`submit` hands it to ``sbatch``/``qsub``.  :func:`preview` returns that
script and the job script every worker job will get, without submitting.

The driver's dashboard listens on 127.0.0.1 of its node: the driver's log names
the port (``dashboard: http://127.0.0.1:PORT/status``), and
``ssh -N -L 8787:127.0.0.1:PORT <driver-node>`` brings it to a laptop.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinolc_dist.cluster.core import build_cluster
from sinolc_dist.cluster.jobstatus import profile_hint
from sinolc_dist.cluster.profiles import job_class, require_commands, walltime_seconds
from sinolc_dist.errors import ConfigError
from sinolc_dist.stages.infer import CheckedRun, RunRequest, check_run

DRIVER_WALLTIME = "48:00:00"
DRIVER_CPUS = 2
DRIVER_MEMORY_GB = 8
#: The driver job's id inside its own script, per scheduler (PBS ids lose their ".server" part).
_JOB_ID = {"slurm": "$SLURM_JOB_ID", "pbs": "${PBS_JOBID%%.*}", "sge": "$JOB_ID"}
#: A command that prints the node a job runs on.
_WHERE = {"slurm": "squeue -h -o %N -j {id}", "pbs": "qstat -f {id} | grep exec_host",
          "sge": "qstat -s r | grep '^ *{id} '"}


@dataclass(frozen=True)
class SubmitResult:
    """A submitted driver job: its id, script, log and how to reach its dashboard."""

    kind: str
    job_id: str
    script: Path
    log: Path

    def describe(self) -> str:
        """What to tell the user: the job, its log, and the ssh tunnel to the dashboard."""
        where = _WHERE[self.kind].format(id=self.job_id)
        return "\n".join([
            f"driver job: {self.job_id}",
            f"script: {self.script}",
            f"log: {self.log}  (follow it: tail -f {self.log})",
            f"driver node: `{where}` once the job runs",
            f"dashboard: the log's line `dashboard: http://127.0.0.1:PORT/status` gives PORT "
            f"(grep dashboard: {self.log}); then, from your machine:",
            "  ssh -N -L 8787:127.0.0.1:PORT <driver-node>    and open http://127.0.0.1:8787/status",
        ])


def _checked(req: RunRequest) -> CheckedRun:
    """``run``'s own check of every argument (writing nothing), and a batch scheduler's profile."""
    checked = check_run(req)
    if checked.kind == "local":
        raise ConfigError(f"cluster profile {req.cluster!r} is local: `submit` needs a batch scheduler "
                          "profile (slurm, pbs, sge); run a local cluster with `sinolc-dist run`")
    return checked


def _driver_hint(kind: str, said: str, settings: dict[str, Any], queue: str | None) -> str:
    """What to change when the scheduler refuses the driver job: an option of `submit` or a profile key."""
    hint = profile_hint(kind, said, settings)
    if "'queue'" in hint:
        if queue:
            return f"change --driver-queue (now {queue!r}): the driver job's queue"
        return f"{hint}, or give the driver a queue of its own with --driver-queue"
    if "'walltime'" in hint:
        return "change --driver-walltime (the driver's walltime; default 48:00:00)"
    if "'account'" in hint or "'project'" in hint:
        return hint
    return (f"{hint}; the driver job itself asks {DRIVER_CPUS} CPUs, {DRIVER_MEMORY_GB} GB and "
            "--driver-walltime in --driver-queue (default: the profile's queue)")


def _default_executable() -> str:
    """The ``sinolc-dist`` of this Python environment (what submits is what runs)."""
    beside = Path(sys.executable).with_name("sinolc-dist")
    return str(beside) if beside.exists() else "sinolc-dist"


def _header(kind: str, settings: dict[str, Any], walltime: str, queue: str | None,
            logs: Path) -> list[str]:
    queue = queue or settings.get("queue")
    account = settings.get("project" if kind == "sge" else "account")
    mem = f"{DRIVER_MEMORY_GB}G"
    if kind == "slurm":
        lines = ["-J sinolc-driver", f"-p {queue}" if queue else "", f"-A {account}" if account else "",
                 "-n 1", f"--cpus-per-task={DRIVER_CPUS}", f"--mem={mem}", f"-t {walltime}",
                 f"-o {logs}/driver-%j.out"]
        prefix = "#SBATCH"
    elif kind == "pbs":
        lines = ["-N sinolc-driver", f"-q {queue}" if queue else "", f"-A {account}" if account else "",
                 f"-l select=1:ncpus={DRIVER_CPUS}:mem={mem}B", f"-l walltime={walltime}",
                 "-j oe", f"-o {logs}/", "-V"]
        prefix = "#PBS"
    else:
        lines = ["-N sinolc-driver", f"-q {queue}" if queue else "", f"-P {account}" if account else "",
                 f"-l h_rt={walltime}", "-j y", f"-o {logs}/", "-V", "-S /bin/bash"]
        prefix = "#$"
    return [f"{prefix} {line}" for line in lines if line]


def render_driver_script(kind: str, settings: dict[str, Any], req: RunRequest,
                         walltime: str = DRIVER_WALLTIME, queue: str | None = None,
                         executable: str | None = None, cwd: Path | None = None) -> str:
    """The batch script that runs ``sinolc-dist run`` for ``req`` as a ``kind`` job.

    Small resources and a long walltime (the driver only dispatches; workers are
    separate jobs), the profile's ``job_script_prologue`` (modules, conda), a
    ``cd`` to ``cwd`` (where names of workflows/profiles resolve, default: here)
    and the log in ``<run-dir>/logs/driver-<job id>.out``.  ``queue`` defaults
    to the profile's.  If the job dies, submitting again resumes the run.
    """
    walltime_seconds(kind, walltime)
    run_dir = Path(req.run_dir).resolve()
    logs = run_dir / "logs"
    args = ["run", "--region", req.region, "--workflow", req.workflow, "--cluster", req.cluster,
            "--run-dir", str(run_dir)]
    for flag, value in (("--checkpoint", req.checkpoint), ("--boundaries", req.boundaries)):
        if value:
            args += [flag, value]
    args += req.model.flags()
    if not req.mosaic:
        args.append("--no-mosaic")
    command = " ".join(shlex.quote(a) for a in [executable or _default_executable(), *args])
    body = [*settings.get("job_script_prologue", []), "set -eo pipefail",
            f"cd {shlex.quote(str((cwd or Path.cwd()).resolve()))}"]
    if kind == "pbs":  # SLURM's PBS wrappers (slurm-wlm-torque) set SLURM_JOB_ID, not PBS_JOBID
        body.append('PBS_JOBID=${PBS_JOBID:-${SLURM_JOB_ID:-}}')
    if kind != "slurm":  # SLURM names the log itself (-o …-%j.out)
        body.append(f'exec >"{logs}/driver-{_JOB_ID[kind]}.out" 2>&1')
    body += [
        f'echo "sinolc-dist driver: job {_JOB_ID[kind]} on $(hostname) since $(date -Is)"',
        'echo "ssh tunnel to the Dask dashboard, PORT from the dashboard line below: '
        'ssh -N -L 8787:127.0.0.1:PORT $(hostname)"',
        f"exec {command}",
    ]
    return "\n".join(["#!/usr/bin/env bash", *_header(kind, settings, walltime, queue, logs),
                      "", *body, ""])


def preview(req: RunRequest, walltime: str = DRIVER_WALLTIME,
            queue: str | None = None) -> tuple[str, str]:
    """The driver's batch script and a worker's job script, submitting nothing.

    Every argument is checked as ``run`` checks it and nothing is written: the
    worker script comes from ``cluster.job_script()`` of a cluster built here
    with its scheduler on 127.0.0.1 (its scheduler address and certificate file
    names are this preview's, the driver's own differ).
    """
    checked = _checked(req)
    driver = render_driver_script(checked.kind, checked.settings, req, walltime, queue)
    return driver, _worker_script(checked.kind, checked.settings, Path(req.run_dir))


def _worker_script(kind: str, settings: dict[str, Any], run_dir: Path) -> str:
    """A worker's job script as the run would submit it, with nothing written in the run directory.

    dask-jobqueue creates the log folder and writes the TLS certificates as it
    builds a job, so the cluster is built on a scratch folder whose path is then
    put back as the run directory's (and the profile's ``log_directory``'s).
    """
    with tempfile.TemporaryDirectory(prefix="sinolc-preview-") as tmp:
        scratch = Path(tmp).resolve()
        real = {str(scratch): str(run_dir.resolve())}
        if settings.get("log_directory"):  # the profile's own (longer path first: replaced first)
            real = {str(scratch / "profile-logs"): str(settings["log_directory"]), **real}
            settings = {**settings, "log_directory": str(scratch / "profile-logs")}
        cluster = build_cluster(kind, settings, scratch, scheduler_host="127.0.0.1")
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
            del cluster  # its certificate files (open temporary files) go before their folder
    for path, value in real.items():
        script = script.replace(path, value)
    return script


def submit(req: RunRequest, walltime: str = DRIVER_WALLTIME, queue: str | None = None) -> SubmitResult:
    """Write ``<run-dir>/driver.<kind>.sh`` and submit it; errors quote the scheduler.

    Every argument is checked first as ``run`` checks it (workflow, profile,
    region, the model file against its architecture), so a mistake fails here,
    with nothing written, rather than after hours in the queue.
    """
    checked = _checked(req)
    kind, settings = checked.kind, checked.settings
    require_commands(kind)
    run_dir = Path(req.run_dir).resolve()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    script = run_dir / f"driver.{kind}.sh"
    script.write_text(render_driver_script(kind, settings, req, walltime, queue), encoding="utf-8")
    job_cls = job_class(kind)
    cmd = [*shlex.split(str(job_cls.submit_command)), str(script)]
    # In logs/: SLURM's PBS wrappers write the job's own output (<script>.o<id>) where qsub runs.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=run_dir / "logs", check=False)
    match = re.search(job_cls.job_id_regexp, proc.stdout)
    if proc.returncode or match is None:
        said = " ".join((proc.stderr.strip() or proc.stdout).split()) or f"exit status {proc.returncode}"
        wrapped = re.search(r"and the output was:\s*'(.*)'", said)  # SLURM's PBS wrappers
        said = wrapped[1].strip() if wrapped else said
        hint = _driver_hint(kind, said, settings, queue)
        raise ConfigError(f"`{' '.join(cmd)}` refused the driver job: {said}; {hint}")
    job_id = match["job_id"]
    return SubmitResult(kind, job_id, script, run_dir / "logs" / f"driver-{job_id}.out")
