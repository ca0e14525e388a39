"""A cluster profile → a Dask cluster and a client.

``local`` is a :class:`distributed.LocalCluster` on loopback.  ``slurm``, ``pbs`` and
``sge`` are dask-jobqueue clusters: a profile's keys are the class's keyword arguments
(checked up front, so a typo names the valid keys) plus ours: ``tls`` (default true:
temporary certificates, the workers' copies in ``<run_dir>/.dask-tls``, which the compute
nodes must see, as they see the run directory), ``minimum_jobs``/``maximum_jobs``
(adaptive scaling, so a killed or pre-empted job is replaced), ``torch_threads``, and
``host``/``dashboard_address`` (default 127.0.0.1; the scheduler follows ``interface``
when the profile has one).  Workers get ``--lifetime`` (the walltime minus a margin)
unless the profile sets it, so they retire before their job is killed.  Nothing in the
pipeline knows which scheduler runs it.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import dask
import dask_jobqueue
from dask.utils import parse_bytes
from dask_jobqueue.core import Job, JobQueueCluster
from distributed import Client, LocalCluster, Nanny, Security
from distributed.core import Status

from sinolc_dist.errors import ConfigError

log = logging.getLogger("sinolc_dist.clusters")
_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
_LOCAL_EXTRA = {"torch_threads"}
#: Our keys, taken out before the rest goes to the dask-jobqueue class.
_OWN = {"tls", "minimum_jobs", "maximum_jobs", "torch_threads", "host", "dashboard_address"}
#: dask-jobqueue arguments that this module sets itself or that are internal.
_SET_HERE = {"self", "kwargs", "base_class_kwargs", "job_kwargs", "scheduler", "name", "n_workers",
             "job_cls", "loop", "asynchronous", "security", "protocol", "shared_temp_directory",
             "scheduler_cls"}
_RENAMED = {"extra": "worker_extra_args", "env_extra": "job_script_prologue",
            "job_extra": "job_extra_directives", "header_skip": "job_directives_skip"}
_LISTS = ("worker_extra_args", "job_extra_directives", "job_script_prologue", "job_directives_skip")
#: Seconds to wait for the first worker job to be accepted (or refused) by the scheduler.
SUBMIT_WAIT = 30.0


def torch_threads(settings: dict[str, Any]) -> int:
    """Intra-op torch threads per worker the profile asks for (0 = torch's default)."""
    return int(settings.get("torch_threads", 0))


def task_resources(settings: dict[str, Any]) -> dict[str, float] | None:
    """What each shard task asks of a worker: ``{"GPU": 1}`` where workers declare GPUs.

    Profiles give GPU workers ``--resources GPU=1``; asking the same of every task
    makes Dask run one task at a time per GPU, whatever the worker's thread count.
    """
    args = [str(a) for a in settings.get("worker_extra_args") or []]
    for flag, value in itertools.pairwise(args):
        if flag == "--resources" and any(p.split("=")[0] == "GPU" for p in value.replace(",", " ").split()):
            return {"GPU": 1}
    return None


def job_class(kind: str) -> type[Job]:
    """dask-jobqueue's job class of a batch kind (its submit command, job-id pattern…)."""
    if kind not in _JOBQUEUE:
        raise ConfigError(
            f"unknown cluster kind {kind!r}; known: local, {', '.join(sorted(_JOBQUEUE))}"
        )
    return getattr(dask_jobqueue, _JOBQUEUE[kind]).job_cls


def _renamed(kind: str) -> dict[str, str]:
    return _RENAMED | ({"project": "account"} if kind in ("slurm", "pbs") else {})


def valid_keys(kind: str) -> set[str]:
    """Keys a profile of this batch kind may hold: the dask-jobqueue class's arguments and ours."""
    params = {p for f in (JobQueueCluster.__init__, Job.__init__, job_class(kind).__init__)
              for p in inspect.signature(f).parameters}
    return (params - _SET_HERE - set(_renamed(kind))) | _OWN


def walltime_seconds(kind: str, value: object) -> int:
    """Seconds in a walltime written as ``kind``'s scheduler reads it.

    ``[D-]H:M:S`` (days for SLURM only), ``M:S``, or one number: minutes for
    SLURM, seconds for PBS and SGE.  It must be a string: YAML reads an unquoted
    ``24:00:00`` as the number 86400, which SLURM would take as minutes.
    """
    if not isinstance(value, str):
        raise ConfigError(f"cluster profile key 'walltime' must be a quoted string such as "
                          f"'24:00:00' (YAML reads unquoted 24:00:00 as a number); got {value!r}")
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", value.strip())
    if m is None or (m[1] and kind != "slurm"):
        form = "[D-]HH:MM:SS" if kind == "slurm" else "HH:MM:SS"
        raise ConfigError(f"cluster profile key 'walltime': {value!r} does not parse as {form}")
    parts = [int(p) for p in m[2].split(":")]
    if m[1]:
        parts += [0] * (3 - len(parts))
    elif len(parts) == 1:
        parts = [0, parts[0], 0] if kind == "slurm" else [0, 0, parts[0]]
    elif len(parts) == 2:
        parts = [0, *parts]
    hours, minutes, seconds = parts
    total = int(m[1] or 0) * 86400 + hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"cluster profile key 'walltime': {value!r} is not a positive duration")
    return total


def lifetime_args(walltime_s: int) -> list[str]:
    """``--lifetime``/``--lifetime-stagger`` that end a worker before its job's walltime.

    The margin is 10 % of the walltime, at least 5 min, at most 30 min and at
    most half the walltime; the stagger (a third of the margin) keeps the
    workers of jobs started together from all retiring at once.
    """
    margin = min(max(0.1 * walltime_s, 300.0), 1800.0, walltime_s / 2)
    return ["--lifetime", f"{int(walltime_s - margin)}s", "--lifetime-stagger", f"{int(margin / 3)}s"]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bytes(v: object) -> int:
    try:
        return int(parse_bytes(str(v)))
    except ValueError:
        return -1


def check_profile(kind: str, settings: dict[str, Any]) -> None:
    """Refuse unknown keys and impossible values of a batch profile, naming the key."""
    unknown = set(settings) - valid_keys(kind)
    if unknown:
        renamed = {k: _renamed(kind)[k] for k in unknown if k in _renamed(kind)}
        hint = "".join(f"; {old!r} is now {new!r}" for old, new in sorted(renamed.items()))
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in the {kind} cluster profile{hint}; "
                          f"valid keys: {', '.join(sorted(valid_keys(kind)))}")

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"cluster profile key {key!r} {why} (got {settings[key]!r})")

    s = settings
    for key, low in (("cores", 1), ("processes", 1), ("job_cpu", 1), ("maximum_jobs", 1),
                     ("minimum_jobs", 0), ("torch_threads", 0)):
        if key in s and s[key] is not None and (not _is_int(s[key]) or s[key] < low):
            raise bad(key, f"must be an integer >= {low}")
    if _is_int(s.get("cores")) and _is_int(s.get("processes")) and s["processes"] > s["cores"]:
        raise bad("processes", f"cannot exceed cores ({s['cores']}): each worker process needs a thread")
    if "maximum_jobs" in s and s["maximum_jobs"] < s.get("minimum_jobs", 0):
        raise bad("maximum_jobs", f"must be >= minimum_jobs ({s['minimum_jobs']})")
    if s.get("memory") is not None and _bytes(s["memory"]) <= 0:
        raise bad("memory", "must be a positive size such as '64GB'")
    if s.get("walltime") is not None:
        walltime_seconds(kind, s["walltime"])
    for key in _LISTS:
        if s.get(key) is not None and not (isinstance(s[key], list)
                                           and all(isinstance(x, str) for x in s[key])):
            raise bad(key, "must be a list of strings")
    if "tls" in s and not isinstance(s["tls"], bool):
        raise bad("tls", "must be true or false")


def require_commands(kind: str) -> None:
    """Check that the scheduler's submit and cancel commands are on PATH (before any start)."""
    job_cls = job_class(kind)
    for command in (job_cls.submit_command, job_cls.cancel_command):
        exe = shlex.split(str(command))[0]
        if shutil.which(exe) is None:
            raise ConfigError(
                f"the {kind} cluster profile needs the `{exe}` command, which is not on PATH: "
                f"run on a node that can submit {kind.upper()} jobs (or load the module providing it)"
            )


def _watched(job_cls: type[Job]) -> type[Job]:
    """``job_cls`` recording each submission's outcome (adaptive scaling would only log it)."""

    class Watched(job_cls):  # type: ignore[misc,valid-type]
        submitted: ClassVar[list[str]] = []
        refusals: ClassVar[list[str]] = []

        async def start(self) -> None:
            try:
                await super().start()
            except (RuntimeError, ValueError) as exc:
                m = re.search(r"stderr:\n(.*)", str(exc), re.S)
                type(self).refusals.append(" ".join((m[1] if m and m[1].strip() else str(exc)).split()))
                self.status = Status.failed  # SpecCluster.close() asserts a started job's status
                raise
            type(self).submitted.append(str(self.job_id))

    Watched.__name__ = Watched.__qualname__ = job_cls.__name__
    return Watched


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
    s = {k: v for k, v in settings.items() if k not in ("minimum_jobs", "maximum_jobs", "torch_threads")}
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
    s.setdefault("log_directory", str(run_dir / "logs" / "workers"))
    s.setdefault("job_name", "sinolc-worker")
    section = f"jobqueue.{s.get('config_name') or job_cls.config_name}"
    extra = list(s.get("worker_extra_args") or dask.config.get(f"{section}.worker-extra-args", []))
    walltime = s.get("walltime") or dask.config.get(f"{section}.walltime", None)
    if walltime and not any(a.split("=")[0] == "--lifetime" for a in extra):
        extra += lifetime_args(walltime_seconds(kind, walltime))
    s["worker_extra_args"] = extra
    if tls:
        tls_dir = run_dir / ".dask-tls"
        tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        s["security"] = Security.temporary()
        s["shared_temp_directory"] = str(tls_dir)
    try:
        return getattr(dask_jobqueue, _JOBQUEUE[kind])(
            job_cls=_watched(job_cls), scheduler_options=opts, **s
        )
    except (TypeError, ValueError, OSError, RuntimeError) as exc:
        raise ConfigError(f"bad {kind} cluster profile: {' '.join(str(exc).split())}") from None


def _await_submission(cluster: Any, kind: str, timeout: float = SUBMIT_WAIT) -> None:
    """Wait until the scheduler accepted a first worker job; raise with its message if refused."""
    job_cls = cluster.job_cls
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_cls.refusals:
            raise ConfigError(
                f"`{job_cls.submit_command}` refused the worker job: {job_cls.refusals[0]} "
                f"(check the {kind} profile's queue, account, memory, walltime and GPU request; "
                "`sinolc-dist submit --dry-run` prints the job script)"
            )
        if job_cls.submitted:
            return
        time.sleep(0.1)
    log.warning("no %s worker job submitted after %.0f s; going on", kind, timeout)


@contextmanager
def open_cluster(kind: str, settings: dict[str, Any], run_dir: Path | None = None) -> Iterator[Client]:
    """Start the cluster a profile describes and yield a client; close both after.

    Batch kinds scale adaptively between ``minimum_jobs`` and ``maximum_jobs``,
    so a killed or pre-empted worker job is replaced; a missing scheduler command
    or a refused submission is a :class:`ConfigError` quoting the scheduler.
    ``run_dir`` holds the TLS files and worker logs (default: the current directory).
    """
    if kind in _JOBQUEUE:
        require_commands(kind)
    cluster = build_cluster(kind, settings, run_dir or Path.cwd())
    try:
        if kind in _JOBQUEUE:
            minimum = int(settings.get("minimum_jobs", 1))
            maximum = int(settings.get("maximum_jobs", max(minimum, 1)))
            cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
            if minimum:
                _await_submission(cluster, kind)
        with Client(cluster, security=cluster.security) as client:
            yield client
    finally:
        cluster.close()
