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
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.cluster.scheduler import BatchScheduler
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages.infer import RunRequest, check_run

DRIVER_WALLTIME = "48:00:00"
DRIVER_CPUS = 2
DRIVER_MEMORY_GB = 8


@dataclass(frozen=True)
class SubmitResult:
    """A submitted driver job: its id, script, log and how to reach its dashboard."""

    scheduler: BatchScheduler
    job_id: str
    script: Path
    log: Path

    def describe(self) -> str:
        """What to tell the user: the job, its log, and the ssh tunnel to the dashboard."""
        where = self.scheduler.where_command.format(id=self.job_id)
        return "\n".join([
            f"driver job: {self.job_id}",
            f"script: {self.script}",
            f"log: {self.log}  (follow it: tail -f {self.log})",
            f"driver node: `{where}` once the job runs",
            f"dashboard: the log's line `dashboard: http://127.0.0.1:PORT/status` gives PORT "
            f"(grep dashboard: {self.log}); then, from your machine:",
            "  ssh -N -L 8787:127.0.0.1:PORT <driver-node>    and open http://127.0.0.1:8787/status",
        ])


def _batch(kind: str, cluster: str) -> BatchScheduler:
    """The batch scheduler of a profile's kind; a local profile cannot be submitted."""
    sched = scheduler(kind)
    if not isinstance(sched, BatchScheduler):
        raise ConfigError(f"cluster profile {cluster!r} is local: `submit` needs a batch scheduler "
                          "profile (slurm, pbs, sge); run a local cluster with `sinolc-dist run`")
    return sched


def _driver_hint(sched: BatchScheduler, said: str, settings: dict[str, Any], queue: str | None) -> str:
    """What to change when the scheduler refuses the driver job: an option of `submit` or a profile key."""
    hint = sched.hint(said, settings)
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
    sched = _batch(kind, req.cluster)
    sched.walltime_seconds(walltime)
    rundir = RunDir(Path(req.run_dir).resolve())
    args = ["run", "--region", req.region, "--workflow", req.workflow, "--cluster", req.cluster,
            "--run-dir", str(rundir.root)]
    for flag, value in (("--checkpoint", req.checkpoint), ("--boundaries", req.boundaries),
                        ("--order", req.order)):
        if value:
            args += [flag, value]
    args += req.model.flags()
    if not req.mosaic:
        args.append("--no-mosaic")
    command = " ".join(shlex.quote(a) for a in [executable or _default_executable(), *args])
    body = [*settings.get("job_script_prologue", []), "set -eo pipefail",
            f"cd {shlex.quote(str((cwd or Path.cwd()).resolve()))}", *sched.driver_output(rundir),
            f'echo "sinolc-dist driver: job {sched.job_id_variable} on $(hostname) since $(date -Is)"',
            'echo "ssh tunnel to the Dask dashboard, PORT from the dashboard line below: '
            'ssh -N -L 8787:127.0.0.1:PORT $(hostname)"',
            f"exec {sched.launch(command)}"]
    header = sched.driver_header(settings, walltime, queue, rundir, DRIVER_CPUS, DRIVER_MEMORY_GB)
    return "\n".join(["#!/usr/bin/env bash", *header, "", *body, ""])


def preview(req: RunRequest, walltime: str = DRIVER_WALLTIME,
            queue: str | None = None) -> tuple[str, str]:
    """The driver's batch script and a worker's job script, submitting nothing.

    Every argument is checked as ``run`` checks it and nothing is written: the
    worker script comes from ``cluster.job_script()`` of a cluster built here
    with its scheduler on 127.0.0.1 (its scheduler address and certificate file
    names are this preview's, the driver's own differ).
    """
    checked = check_run(req)
    driver = render_driver_script(checked.kind, checked.settings, req, walltime, queue)
    if not _batch(checked.kind, req.cluster).submits_workers:
        return driver, ("# no worker job script: in one-allocation mode the workers are the tasks of the "
                        "driver's own job (srun)\n")
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
    checked = check_run(req)
    sched, settings = _batch(checked.kind, req.cluster), checked.settings
    sched.require_commands()
    rundir = RunDir(Path(req.run_dir).resolve())
    rundir.logs.mkdir(parents=True, exist_ok=True)
    script = rundir.driver_script(sched.kind)
    script.write_text(render_driver_script(sched.kind, settings, req, walltime, queue), encoding="utf-8")
    cmd = [*shlex.split(str(sched.job_class.submit_command)), str(script)]
    # In logs/: SLURM's PBS wrappers write the job's own output (<script>.o<id>) where qsub runs.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=rundir.logs, check=False)
    match = re.search(sched.job_class.job_id_regexp, proc.stdout)
    if proc.returncode or match is None:
        said = " ".join((proc.stderr.strip() or proc.stdout).split()) or f"exit status {proc.returncode}"
        wrapped = re.search(r"and the output was:\s*'(.*)'", said)  # SLURM's PBS wrappers
        said = wrapped[1].strip() if wrapped else said
        hint = _driver_hint(sched, said, settings, queue)
        raise ConfigError(f"`{' '.join(cmd)}` refused the driver job: {said}; {hint}")
    job_id = match["job_id"]
    return SubmitResult(sched, job_id, script, rundir.driver_job_output(job_id))
