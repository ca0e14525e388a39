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
is lost, retires or is replaced (:mod:`sinolc_dist.cluster.joblog`).  Nothing in the pipeline
knows which scheduler runs it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import dask_jobqueue
from distributed import Client, LocalCluster, Security

from sinolc_dist.cluster.joblog import JobLog
from sinolc_dist.cluster.jobstatus import dead_jobs, profile_hint, watched
from sinolc_dist.cluster.profiles import (
    JOBQUEUE,
    LOCAL_EXTRA,
    SUBMIT_WAIT,
    check_profile,
    job_class,
    lifetime_args,
    require_commands,
    walltime_seconds,
)
from sinolc_dist.cluster.watchdog import JobWatchdog, RunStopped
from sinolc_dist.cluster.worker_logs import WorkerLogFile
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir

log = logging.getLogger("sinolc_dist.cluster.core")
if threading.current_thread() is threading.main_thread():
    # dask-jobqueue's runner makes SIGINT `sys.exit()` on import: Ctrl-C would end any command with
    # exit 0 and not a word.  Ctrl-C is KeyboardInterrupt again ("aborted", 130); a run's dispatch
    # has its own handler (sinolc_dist.stages.dispatch.interruptible).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _local(settings: dict[str, Any]) -> LocalCluster:
    check_profile("local", settings)
    kwargs = {k: v for k, v in settings.items() if k not in LOCAL_EXTRA}
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
    kwargs.setdefault("processes", True)
    if threading.current_thread() is not threading.main_thread():
        return LocalCluster(**kwargs)
    # Worker processes start with SIGINT ignored, as batch jobs' workers are out of a terminal's
    # reach: Ctrl-C stops the driver, which then closes them (no traceback from each worker).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return LocalCluster(**kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)


def worker_dashboard(extra: list[str]) -> list[str]:
    """The worker option that keeps each worker's own dashboard on 127.0.0.1 of its node.

    ``dask worker`` binds it to every interface (``0.0.0.0``) unless told, without
    TLS or login, so anyone on the network could read ``/status`` and ``/profile``;
    nothing needs it from elsewhere (the driver's dashboard shows every worker).
    A profile's own ``--dashboard-address`` is kept.
    """
    if any(a.split("=")[0] == "--dashboard-address" for a in extra):
        return []
    return ["--dashboard-address", "127.0.0.1:0"]


def build_cluster(kind: str, settings: dict[str, Any], run_dir: Path,
                  scheduler_host: str | None = None) -> Any:
    """The cluster a profile describes: its scheduler runs here, no worker job is submitted yet.

    So ``cluster.job_script()`` shows exactly what would be submitted, with no
    batch scheduler needed.  ``scheduler_host`` forces where the scheduler binds
    (a dry run on a machine without the profile's ``interface``).  Worker logs
    go to ``<run_dir>/logs/workers`` unless the profile says otherwise.
    """
    if kind == "local":
        return _local(settings)
    job_cls = job_class(kind)
    check_profile(kind, settings)
    s = {k: v for k, v in settings.items()
         if k not in ("minimum_jobs", "maximum_jobs", "torch_threads", "watch_interval", "give_up_after")}
    tls = s.pop("tls", True)
    opts = dict(s.pop("scheduler_options", None) or {})
    opts.update({k: s.pop(k) for k in ("host", "dashboard_address") if k in s})
    opts.setdefault("dashboard_address", "127.0.0.1:0")
    if scheduler_host:
        opts["host"] = scheduler_host
        opts.pop("interface", None)
    elif "host" not in opts and "interface" not in opts and not s.get("interface"):
        opts["host"] = "127.0.0.1"
    run_dir = Path(run_dir).resolve()
    s["log_directory"] = str(Path(s.get("log_directory") or RunDir(run_dir).worker_logs).absolute())
    s.setdefault("job_name", "sinolc-worker")
    section = f"jobqueue.{s.get('config_name') or job_cls.config_name}"
    extra = list(s.get("worker_extra_args") or dask.config.get(f"{section}.worker-extra-args", []))
    walltime = s.get("walltime") or dask.config.get(f"{section}.walltime", None)
    if walltime and not any(a.split("=")[0] == "--lifetime" for a in extra):
        extra += lifetime_args(walltime_seconds(kind, walltime))
    s["worker_extra_args"] = extra + worker_dashboard(extra)
    if tls:
        tls_dir = run_dir / ".dask-tls"
        tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        s["security"] = Security.temporary()
        s["shared_temp_directory"] = str(tls_dir)
    try:
        return getattr(dask_jobqueue, JOBQUEUE[kind])(
            job_cls=watched(job_cls, kind), scheduler_options=opts, **s
        )
    except (TypeError, ValueError, OSError, RuntimeError) as exc:
        raise ConfigError(f"bad {kind} cluster profile: {' '.join(str(exc).split())}") from None


class _QuietRefusals(logging.Filter):
    """Drops the event loop's traceback of a refused submission: the ConfigError quotes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, RuntimeError) and "Command exited with non-zero exit code" in str(exc))


def _await_submission(cluster: Any, kind: str, settings: dict[str, Any],
                      timeout: float = SUBMIT_WAIT) -> None:
    """Wait for the first worker; raise, quoting the scheduler, if its job was refused or died.

    A refused submission (unknown queue, a resource the scheduler rejects) and a
    job that ended or went into an error state before its worker connected (the
    scheduler killed it at start) are :class:`ConfigError` naming the profile key
    to change.  Jobs still queued after ``timeout`` are left to wait: a busy
    cluster is not an error.
    """
    job_cls = cluster.job_cls
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if job_cls.refusals:
            said = job_cls.refusals[0]
            raise ConfigError(
                f"`{job_cls.submit_command}` refused the worker job: {said}; "
                f"{profile_hint(kind, said, settings)} "
                "(`sinolc-dist submit --dry-run` prints the job script)"
            )
        if cluster.scheduler_info.get("workers"):
            return
        if job_cls.submitted and time.monotonic() >= next_check:
            dead = dead_jobs(cluster, kind, limit=1)
            if dead and not cluster.scheduler_info.get("workers"):
                raise ConfigError(f"{dead[0].describe(kind, settings)} "
                                  "(`sinolc-dist submit --dry-run` prints the job script)")
            next_check = time.monotonic() + 2.0
        time.sleep(0.1)
    if job_cls.submitted:
        log.info("%s worker job(s) %s not started after %.0f s (queued); going on", kind,
                 " ".join(job_cls.submitted), timeout)
    else:
        log.warning("no %s worker job submitted after %.0f s; going on", kind, timeout)


@contextmanager
def open_cluster(kind: str, settings: dict[str, Any], run_dir: Path | None = None) -> Iterator[Client]:
    """Start the cluster a profile describes and yield a client; close both after.

    Batch kinds scale adaptively between ``minimum_jobs`` and ``maximum_jobs``,
    so a killed or pre-empted worker job is replaced; a missing scheduler command,
    a refused submission or a first job that dies before its worker connects is a
    :class:`ConfigError` quoting the scheduler and naming the profile key to change.
    ``run_dir`` holds the TLS files and worker logs (default: the current directory).
    """
    if kind in JOBQUEUE:
        require_commands(kind)
    cluster = build_cluster(kind, settings, run_dir or Path.cwd())
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
        if kind in JOBQUEUE:
            minimum = int(settings.get("minimum_jobs", 1))
            maximum = int(settings.get("maximum_jobs", max(minimum, 1)))
            cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
            if minimum:
                _await_submission(cluster, kind, settings)
        tornado_log.removeFilter(quiet)
        with Client(cluster, security=cluster.security) as client:
            if kind not in JOBQUEUE:
                if settings.get("processes", True):
                    client.register_plugin(WorkerLogFile(RunDir(run_dir or Path.cwd()).worker_logs))
                yield client
                return
            watchdog = JobWatchdog(cluster, kind, settings)
            try:
                with watchdog:
                    yield client
            except RunStopped:  # the watchdog stopped a driver whose worker jobs all die at start
                raise ConfigError(watchdog.failure) from None
    finally:
        jobs.closing = True
        ids = [str(j.job_id) for j in list(cluster.workers.values()) if getattr(j, "job_id", None)]
        if ids:
            log.info("closing the %s cluster: cancelling worker job(s) %s", kind, " ".join(ids))
        cluster.close()
        tornado_log.removeFilter(quiet)
