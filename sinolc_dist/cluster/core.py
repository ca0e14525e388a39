"""A cluster profile → a Dask cluster and a client.

``local`` is a :class:`distributed.LocalCluster` on loopback.  ``slurm``, ``pbs`` and
``sge`` are dask-jobqueue clusters: a profile's keys are the class's keyword arguments
(checked up front, so a typo names the valid keys) plus ours: ``tls`` (default true:
temporary certificates, the workers' copies in ``<run_dir>/.dask-tls``, which the compute
nodes must see, as they see the run directory), ``minimum_jobs``/``maximum_jobs``
(adaptive scaling, so a killed or pre-empted job is replaced), ``torch_threads``, and
``host``/``dashboard_address`` (default 127.0.0.1; the scheduler follows ``interface``
when the profile has one).  Workers get ``--lifetime`` (the walltime minus a margin)
unless the profile sets it, so they retire before their job is killed, and
``--dashboard-address 127.0.0.1:0`` (their own dashboards never on every interface).  The
scheduler's address goes to the driver's log, and so does each worker job that connects,
is lost, retires or is replaced (:mod:`sinolc_dist.cluster.joblog`).  What differs between
schedulers is theirs (:mod:`sinolc_dist.cluster.scheduler` and one module each); nothing
in the pipeline knows which scheduler runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client

from sinolc_dist.cluster.joblog import JobLog
from sinolc_dist.cluster.registry import scheduler

log = logging.getLogger("sinolc_dist.cluster.core")


def build_cluster(kind: str, settings: dict[str, Any], run_dir: Path,
                  scheduler_host: str | None = None) -> Any:
    """The cluster a profile describes: its scheduler runs here, no worker job is submitted yet.

    So ``cluster.job_script()`` shows exactly what would be submitted, with no
    batch scheduler needed.  ``scheduler_host`` forces where the scheduler binds
    (a dry run on a machine without the profile's ``interface``).  Worker logs
    go to ``<run_dir>/logs/workers`` unless the profile says otherwise.
    """
    return scheduler(kind).build(settings, run_dir, scheduler_host)


class _QuietRefusals(logging.Filter):
    """Drops the event loop's traceback of a refused submission: the ConfigError quotes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, RuntimeError) and "Command exited with non-zero exit code" in str(exc))


@contextmanager
def open_cluster(kind: str, settings: dict[str, Any], run_dir: Path | None = None) -> Iterator[Client]:
    """Start the cluster a profile describes and yield a client; close both after.

    Batch kinds scale adaptively between ``minimum_jobs`` and ``maximum_jobs``,
    so a killed or pre-empted worker job is replaced; a missing scheduler command,
    a refused submission or a first job that dies before its worker connects is a
    :class:`ConfigError` quoting the scheduler and naming the profile key to change.
    ``run_dir`` holds the TLS files and worker logs (default: the current directory).
    """
    sched = scheduler(kind)
    sched.require_commands()
    run_dir = run_dir or Path.cwd()
    cluster = sched.build(settings, run_dir)
    jobs = JobLog(cluster, kind, getattr(getattr(cluster, "job_cls", None), "gone", []))

    async def add_job_log() -> None:  # on the scheduler's event loop, before any worker job starts
        cluster.scheduler.add_plugin(jobs)
        for address in list(cluster.scheduler.workers):  # a LocalCluster's, started with it
            jobs.add_worker(cluster.scheduler, address)

    # Until the first worker is in, a refusal's traceback from the event loop would only repeat
    # the ConfigError; a later one (a replacement job refused mid-run) is logged in full.
    quiet, tornado_log = _QuietRefusals(), logging.getLogger("tornado.application")
    tornado_log.addFilter(quiet)
    try:
        cluster.sync(add_job_log)
        log.info("%s cluster: scheduler %s, dashboard %s", kind, cluster.scheduler_address,
                 cluster.dashboard_link)
        sched.scale(cluster, settings)
        tornado_log.removeFilter(quiet)
        with Client(cluster, security=cluster.security) as client, \
                sched.supervise(cluster, client, settings, run_dir):
            yield client
    finally:
        jobs.closing = True
        ids = [str(j.job_id) for j in list(cluster.workers.values()) if getattr(j, "job_id", None)]
        if ids:
            log.info("closing the %s cluster: cancelling worker job(s) %s", kind, " ".join(ids))
        cluster.close()
        tornado_log.removeFilter(quiet)
