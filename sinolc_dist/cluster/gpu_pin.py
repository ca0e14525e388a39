"""Preloaded by each worker of a multi-GPU job (``--preload``): pin the worker to its own GPU.

A job of ``gpus_per_job: N`` runs ``dask worker --nworkers N``, whose workers
are named ``<name>-0`` … ``<name>-<N-1>``; worker *i* keeps only the *i*-th of
the devices the scheduler gave the job (``CUDA_VISIBLE_DEVICES``, which SLURM
sets from the GPUs it allocated; ``0 … N-1`` where the scheduler sets
nothing), so each worker's torch sees one GPU, as ``cuda:0``.  It runs when the
worker starts, before any task could initialise CUDA.  This module imports
nothing of the package, so the worker loads no more than it needs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("sinolc_dist.cluster.gpu_pin")

#: Where the pin is written (the variable CUDA reads when it starts).
VISIBLE = "CUDA_VISIBLE_DEVICES"


def rank_of(name: object) -> int:
    """A worker's place in its job: the number after the last ``-`` of its name (0 for a lone worker)."""
    tail = str(name).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() and "-" in str(name) else 0


def device_for(rank: int, visible: str | None) -> str:
    """The device a worker of ``rank`` keeps out of the job's ``CUDA_VISIBLE_DEVICES`` (``None``: unset)."""
    devices = [d.strip() for d in (visible or "").split(",") if d.strip()]
    if not devices:
        return str(rank)
    return devices[rank % len(devices)]


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: set this worker process's ``CUDA_VISIBLE_DEVICES`` to its own GPU."""
    device = device_for(rank_of(worker.name), os.environ.get(VISIBLE))
    os.environ[VISIBLE] = device
    log.info("worker %s pinned to GPU %s (%s=%s)", worker.name, device, VISIBLE, device)
