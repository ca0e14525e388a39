"""Cluster profiles checked before anything starts, and what a profile asks of the run's tasks.

A profile's keys are its scheduler's (:mod:`sinolc_dist.cluster.local`, or a
dask-jobqueue class's keyword arguments for a batch scheduler) plus ours
(``tls``, ``minimum_jobs``, ``maximum_jobs``, ``torch_threads``, ``host``,
``dashboard_address``, and the job watchdog's ``watch_interval`` and
``give_up_after``); an unknown or renamed key, an impossible value or a
scheduler command missing from PATH is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import itertools
from typing import Any

from sinolc_dist.cluster.registry import scheduler


def check_profile(kind: str, settings: dict[str, Any]) -> None:
    """Refuse an unknown kind, unknown keys and values of the wrong type or range, naming the key.

    Every key a profile of ``kind`` (``local`` or a batch kind) may hold is
    checked here, so that nothing fails after a run directory is written.
    """
    scheduler(kind).check(settings)


def torch_threads(settings: dict[str, Any]) -> int:
    """Intra-op torch threads per worker the profile asks for (0 = torch's default)."""
    return int(settings.get("torch_threads", 0))


def task_resources(settings: dict[str, Any]) -> dict[str, float] | None:
    """What each shard task asks of a worker: ``{"GPU": 1}`` where workers declare GPUs.

    Profiles give GPU workers ``--resources GPU=1``; asking the same of every task
    makes Dask run one task at a time per GPU, whatever the worker's thread count.
    """
    if settings.get("gpus_per_job"):
        return {"GPU": 1}
    args = [str(a) for a in settings.get("worker_extra_args") or []]
    for flag, value in itertools.pairwise(args):
        if flag == "--resources" and any(p.split("=")[0] == "GPU" for p in value.replace(",", " ").split()):
            return {"GPU": 1}
    return None
