"""SLURM: ``sbatch`` worker jobs, ``scontrol`` for their state, ``#SBATCH`` directives.

Its own: walltimes in minutes when one number and with days (``D-HH:MM:SS``),
``--gres``/``--qos``/``--cpus-per-task`` in the hints, ``$SLURM_JOB_ID``, and a
driver whose log SLURM names itself (``-o …-%j.out``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from dask_jobqueue import SLURMCluster

from sinolc_dist.cluster.gpus import refuse_other_count
from sinolc_dist.cluster.scheduler import BatchScheduler, run_command
from sinolc_dist.rundir.layout import RunDir

#: A directive asking GPUs: ``--gres=gpu[:type]:N``, ``--gpus[-per-node]=[type:]N``, ``-G N``.
_GPU_LINE = r"--gres=gpu(?::[\w-]+)?:(\d+)|--gpus(?:-per-node)?[= ](?:[\w-]+:)?(\d+)|-G ?(\d+)"
#: SLURM job states of a job that still waits or runs.
_ALIVE = ("PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING")


class Slurm(BatchScheduler):
    """SLURM through dask-jobqueue's ``SLURMCluster``."""

    kind = "slurm"
    cluster_class = SLURMCluster
    directive_prefix = "#SBATCH"
    job_id_variable = "$SLURM_JOB_ID"
    where_command = "squeue -h -o %N -j {id}"
    walltime_days = True
    walltime_unit_s = 60
    hints: ClassVar[dict[str, str]] = {
        "node-size": "'gpus_per_job', 'cores', 'job_cpu' or 'memory' (more than any node of the partition "
                     "has)",
        "gpu": "'gpus_per_job' or 'job_extra_directives' (the --gres/--gpus line)",
        "memory": "'memory'",
        "cpus": "'job_cpu' and 'cores'",
        "qos": "'job_extra_directives' (the --qos line)",
        "resource": "'job_extra_directives'",
    }

    def request_gpus(self, s: dict[str, Any], n: int) -> None:
        """``--gres=gpu:N`` among the job's directives (a ``--gres=gpu``/``--gpus`` line must agree)."""
        lines = list(s.get("job_extra_directives") or [])
        for line in lines:
            asked = re.search(_GPU_LINE, line)
            if asked:
                refuse_other_count(s, "job_extra_directives", int(next(g for g in asked.groups() if g)), n,
                                   line)
                return
        s["job_extra_directives"] = [*lines, f"--gres=gpu:{n}"]

    def job_status(self, job_id: str) -> tuple[str, str]:
        """``scontrol show job``: alive while pending or running, else its state, reason and exit code."""
        rc, out = run_command("scontrol", "show", "job", "-o", job_id)
        state = re.search(r"JobState=(\S+)", out)
        if rc or state is None:
            return "ended", " ".join(out.split()) or "no longer known to SLURM"
        if state[1] in _ALIVE:
            return "alive", state[1]
        return "ended", " ".join(m[0] for m in re.finditer(r"(JobState|Reason|ExitCode)=\S+", out))

    def driver_directives(self, queue: str | None, account: str | None, walltime: str, rundir: RunDir,
                          cpus: int, memory_gb: int) -> list[str]:
        """``-J``, ``-p``, ``-A``, one task of ``cpus`` CPUs and ``memory_gb``, ``-t`` and the log."""
        return ["-J sinolc-driver", f"-p {queue}" if queue else "", f"-A {account}" if account else "",
                "-n 1", f"--cpus-per-task={cpus}", f"--mem={memory_gb}G", f"-t {walltime}",
                f"-o {rundir.driver_job_output('%j')}"]

    def driver_output(self, rundir: RunDir) -> list[str]:
        """Nothing: SLURM names the driver's log itself (``-o …/driver-%j.out``)."""
        return []


SLURM = Slurm()
