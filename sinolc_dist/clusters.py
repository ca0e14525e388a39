"""A cluster profile → a running Dask cluster and a client.

``local`` starts a :class:`distributed.LocalCluster` bound to loopback.  Job
queue kinds (``slurm``, ``pbs``, ``sge``) start the matching dask-jobqueue
cluster from the profile's settings, which are dask-jobqueue's own keyword
arguments, plus ``minimum_jobs``/``maximum_jobs`` for adaptive scaling.
Nothing in the pipeline knows which scheduler runs it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client, LocalCluster, Nanny

from sinolc_dist.errors import ConfigError

_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
_LOCAL_EXTRA = {"torch_threads"}
_ADAPT_KEYS = {"minimum_jobs", "maximum_jobs", "torch_threads"}


def torch_threads(settings: dict[str, Any]) -> int:
    """Intra-op torch threads per worker the profile asks for (0 = torch's default)."""
    return int(settings.get("torch_threads", 0))


def _local(settings: dict[str, Any]) -> LocalCluster:
    allowed = (set(inspect.signature(LocalCluster.__init__).parameters)
               | set(inspect.signature(Nanny.__init__).parameters) | _LOCAL_EXTRA)
    unknown = set(settings) - allowed
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in the local cluster profile")
    kwargs = {k: v for k, v in settings.items() if k not in _LOCAL_EXTRA}
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
    kwargs.setdefault("processes", True)
    return LocalCluster(**kwargs)


def _jobqueue(kind: str, settings: dict[str, Any]) -> Any:
    import dask_jobqueue

    cls = getattr(dask_jobqueue, _JOBQUEUE[kind])
    kwargs = {k: v for k, v in settings.items() if k not in _ADAPT_KEYS}
    try:
        cluster = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad {kind} profile setting: {exc}") from None
    cluster.adapt(minimum_jobs=int(settings.get("minimum_jobs", 1)),
                  maximum_jobs=int(settings.get("maximum_jobs", 1)))
    return cluster


@contextmanager
def open_cluster(kind: str, settings: dict[str, Any]) -> Iterator[Client]:
    """Start the cluster a profile describes and yield a client; close both after."""
    if kind == "local":
        cluster = _local(settings)
    elif kind in _JOBQUEUE:
        cluster = _jobqueue(kind, settings)
    else:
        raise ConfigError(
            f"unknown cluster kind {kind!r}; known: local, {', '.join(sorted(_JOBQUEUE))}"
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
