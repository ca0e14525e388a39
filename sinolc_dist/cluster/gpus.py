"""Multi-GPU worker jobs: ``gpus_per_job: N`` makes each batch job run N Dask workers, one per GPU.

National runs use nodes of 4–8 GPUs, and many centres bill by the node.  With
``gpus_per_job: N`` each worker job asks its scheduler for N GPUs (SLURM's
``--gres=gpu:N``, PBS's ``ngpus=N``, Grid Engine's ``-l gpu=N``: each
scheduler's own :meth:`~sinolc_dist.cluster.scheduler.BatchScheduler.request_gpus`)
and starts N worker processes (dask-jobqueue's ``processes``), so the job's
``cores`` are split between them.  Each worker declares ``GPU=1`` (so a task
that asks ``GPU=1`` runs one at a time per GPU) and preloads
:mod:`sinolc_dist.cluster.gpu_pin`, which pins it to its own device before
torch sees any.  A profile that already asks for GPUs or resources in another
way, inconsistently, is refused here, naming the key.
"""

from __future__ import annotations

import itertools
from typing import Any

from sinolc_dist.cluster.checks import bad, is_int
from sinolc_dist.errors import ConfigError

#: The profile key.
GPUS_PER_JOB = "gpus_per_job"
#: The module every worker of a multi-GPU job preloads (it sets ``CUDA_VISIBLE_DEVICES``).
PIN_MODULE = "sinolc_dist.cluster.gpu_pin"


def check_gpus(s: dict[str, Any]) -> None:
    """Refuse a ``gpus_per_job`` that cannot be honoured: not a whole number ≥ 1, too few cores, a clash.

    ``processes``, when given, must equal it (one worker per GPU); ``cores`` must
    give each worker at least one thread; a ``--resources`` other than ``GPU=1``
    in ``worker_extra_args`` would let two tasks share a GPU.
    """
    n = s.get(GPUS_PER_JOB)
    if n is None:
        return
    if not is_int(n) or n < 1:
        raise bad(s, GPUS_PER_JOB, "must be a whole number of GPUs >= 1")
    if s.get("processes") not in (None, n):
        raise bad(s, "processes", f"must equal gpus_per_job ({n}): one worker per GPU (or drop the key)")
    if is_int(s.get("cores")) and s["cores"] < n:
        raise bad(s, "cores", f"must be at least gpus_per_job ({n}): the job's threads are split "
                              "between its workers, one or more each")
    for flag, value in itertools.pairwise(str(a) for a in s.get("worker_extra_args") or []):
        if flag == "--resources" and value.replace(" ", "") != "GPU=1":
            raise bad(s, "worker_extra_args", f"asks --resources {value!r}: with gpus_per_job each "
                                              "worker declares GPU=1 itself; drop the --resources pair")


def gpu_settings(s: dict[str, Any], n: int) -> dict[str, Any]:
    """The dask-jobqueue settings of an ``n``-GPU job: n processes, each declaring and pinning one GPU.

    ``s`` was checked (:func:`check_gpus`); the scheduler's GPU request is added by the caller.
    """
    args = [str(a) for a in s.get("worker_extra_args") or []]
    if "--resources" not in args:
        args += ["--resources", "GPU=1"]
    if n > 1:  # a lone worker keeps the job's one GPU
        args += ["--preload", PIN_MODULE]
    return {**s, "processes": n, "worker_extra_args": args}


def refuse_other_count(s: dict[str, Any], key: str, asked: int | None, n: int, form: str) -> None:
    """A profile's own GPU request (``asked``, read from ``key``) must agree with ``gpus_per_job``."""
    if asked is not None and asked != n:
        raise ConfigError(f"cluster profile key {key!r} asks {asked} GPU(s) ({form}) but gpus_per_job is "
                          f"{n}: drop the GPU request from {key!r} (gpus_per_job writes it) or make "
                          "them agree")
