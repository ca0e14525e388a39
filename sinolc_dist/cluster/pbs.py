"""PBS (PBS Pro, Torque, and SLURM's PBS wrappers): ``qsub`` worker jobs, ``qstat -f``, ``#PBS``.

Its own: the ``resource_spec`` request (``select=…:ncpus=…:mem=…`` or Torque's
``nodes=…:ppn=…,mem=…``) checked against the worker's threads and memory, worker
jobs submitted from their log directory, ``$PBS_JOBID`` without its server part.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from dask_jobqueue import PBSCluster
from dask_jobqueue.pbs import pbs_format_bytes_ceil

from sinolc_dist.cluster.checks import is_int, size_bytes
from sinolc_dist.cluster.gpus import refuse_other_count
from sinolc_dist.cluster.scheduler import BatchScheduler, run_command
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir


def pbs_request(resource_spec: str) -> dict[str, int]:
    """CPUs (``ncpus=``/``ppn=``) and memory in bytes (``mem=``) of a PBS resource request.

    Both forms: PBS Pro's ``select=1:ncpus=8:ngpus=1:mem=64GB`` and Torque's
    ``nodes=1:ppn=8:gpus=1,mem=64gb``.  PBS counts kb/mb/gb/tb in powers of 1024.
    """
    out: dict[str, int] = {}
    cpus = re.search(r"(?:^|[:,])(?:ncpus|ppn)=(\d+)", resource_spec)
    if cpus:
        out["cpus"] = int(cpus[1])
    mem = re.search(r"(?:^|[:,])mem=(\d+)([kmgtp]?)(b|w)?(?=$|[:,])", resource_spec, re.I)
    if mem:
        out["mem"] = int(mem[1]) * 1024 ** "bkmgtp".index((mem[2] or "b").lower())
    return out


class Pbs(BatchScheduler):
    """PBS through dask-jobqueue's ``PBSCluster``."""

    kind = "pbs"
    cluster_class = PBSCluster
    directive_prefix = "#PBS"
    job_id_variable = "${PBS_JOBID%%.*}"
    where_command = "qstat -f {id} | grep exec_host"
    hints: ClassVar[dict[str, str]] = {
        "node-size": "'gpus_per_job' or 'resource_spec' (ngpus=/gpus=, ncpus=/ppn=, mem=: more than any node "
                     "has)",
        "gpu": "'gpus_per_job' or 'resource_spec' (ngpus=, or gpus= in the Torque form)",
        "memory": "'resource_spec' (mem=) and 'memory'",
        "cpus": "'resource_spec' (ncpus=, ppn=)",
        "resource": "'resource_spec'",
    }
    # SLURM's PBS wrappers (slurm-wlm-torque) put the job's output where qsub runs (<script>.o<id>/.e<id>),
    # their own -o/-e overriding the script's #PBS lines; for a real PBS server it changes only PBS_O_WORKDIR.
    submit_in_log_directory = True

    def check(self, settings: dict[str, Any]) -> None:
        """The shared checks, and a ``resource_spec`` that holds the worker's threads and memory."""
        super().check(settings)
        if isinstance(settings.get("resource_spec"), str):
            _check_request(settings)

    def request_gpus(self, s: dict[str, Any], n: int) -> None:
        """``ngpus=N`` in the ``select`` of ``resource_spec`` (Torque's ``nodes=…``: ``gpus=N``).

        Without a ``resource_spec`` it is dask-jobqueue's own (``select=1:ncpus=<cores>:mem=<memory>``)
        with the GPUs added; a GPU count already there must agree.
        """
        spec = s.get("resource_spec")
        if not spec:
            spec = f"select=1:ncpus={s.get('cores', 1)}"
            if s.get("memory"):
                spec += f":mem={pbs_format_bytes_ceil(size_bytes(s['memory']))}"
        asked = re.search(r"(?:^|:)n?gpus=(\d+)", spec)
        if asked:
            refuse_other_count(s, "resource_spec", int(asked[1]), n, spec)
        else:
            torque = spec.startswith("nodes=")
            head, sep, tail = spec.partition(",")
            spec = f"{head}:{'gpus' if torque else 'ngpus'}={n}{sep}{tail}"
        s["resource_spec"] = spec

    def job_status(self, job_id: str) -> tuple[str, str]:
        """``qstat -f``: alive while queued, held or running, else its state, exit status and comment."""
        rc, out = run_command("qstat", "-f", job_id)
        state = re.search(r"job_state = (\w)", out)
        if rc or state is None:
            return "ended", " ".join(out.split()) or "no longer known to the PBS server"
        if state[1] in "QHWTSRBU":
            return "alive", f"job_state = {state[1]}"
        return "ended", "; ".join(m[0].strip() for m in
                                  re.finditer(r"(job_state|exit_status|Exit_status|comment) = .*", out))

    def driver_directives(self, queue: str | None, account: str | None, walltime: str, rundir: RunDir,
                          cpus: int, memory_gb: int) -> list[str]:
        """``-N``, ``-q``, ``-A``, a ``select`` of ``cpus`` and ``memory_gb``, the walltime, the logs."""
        return ["-N sinolc-driver", f"-q {queue}" if queue else "", f"-A {account}" if account else "",
                f"-l select=1:ncpus={cpus}:mem={memory_gb}GB", f"-l walltime={walltime}",
                "-j oe", f"-o {rundir.logs}/", "-V"]

    def driver_output(self, rundir: RunDir) -> list[str]:
        """``$PBS_JOBID`` (SLURM's PBS wrappers, slurm-wlm-torque, set only SLURM_JOB_ID), then the log."""
        return ['PBS_JOBID=${PBS_JOBID:-${SLURM_JOB_ID:-}}', *super().driver_output(rundir)]


def _check_request(s: dict[str, Any]) -> None:
    """The job must ask PBS for at least the threads and memory its worker will use."""
    request = pbs_request(s["resource_spec"])
    cores = s.get("cores")
    if is_int(cores) and request.get("cpus", cores) < cores:
        raise ConfigError(
            f"cluster profile key 'resource_spec' asks {request['cpus']} CPU(s) but 'cores' is {cores}: "
            f"the worker would run more threads than the job has CPUs (got {s['resource_spec']!r})")
    memory = size_bytes(s["memory"]) if s.get("memory") is not None else 0
    if "mem" in request and memory > request["mem"]:
        raise ConfigError(
            f"cluster profile key 'resource_spec' asks less memory (mem=) than 'memory' "
            f"({s['memory']!r}), the worker's limit: the scheduler would kill the job before Dask "
            f"spills or pauses; lower 'memory' or raise mem= (got {s['resource_spec']!r})")


PBS = Pbs()
