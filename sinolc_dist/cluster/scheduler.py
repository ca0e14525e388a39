"""The shared core of the schedulers: what the package asks of one, and what batch schedulers share.

:class:`Scheduler` is what the rest of the package sees of a cluster kind: it
checks a profile, builds the Dask cluster, scales it and watches it while a
run uses it.  :class:`BatchScheduler` is everything dask-jobqueue's batch
schedulers share (their profile keys, walltimes, TLS, adaptive scaling, the
hints that point a scheduler's message at a profile key, the driver job's
script); :mod:`~sinolc_dist.cluster.slurm`, :mod:`~sinolc_dist.cluster.pbs` and
:mod:`~sinolc_dist.cluster.sge` fill in only what is their own, as
dask-jobqueue's ``SLURMJob``/``PBSJob``/``SGEJob`` do.  The one place a kind's
name is looked up is :func:`sinolc_dist.cluster.registry.scheduler`.
"""

from __future__ import annotations

import inspect
import re
import shlex
import shutil
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import dask
from dask_jobqueue.core import Job, JobQueueCluster
from distributed import Client, Security

from sinolc_dist.cluster.checks import (
    bad,
    check_integers,
    check_lists,
    check_strings,
    is_int,
    size_bytes,
    unknown_keys,
)
from sinolc_dist.cluster.gpus import GPUS_PER_JOB, check_gpus, gpu_settings
from sinolc_dist.cluster.jobstatus import await_submission, watched
from sinolc_dist.cluster.watchdog import JobWatchdog, RunStopped
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir

if threading.current_thread() is threading.main_thread():
    # dask-jobqueue's runner makes SIGINT `sys.exit()` on import: Ctrl-C would end any command with
    # exit 0 and not a word.  Ctrl-C is KeyboardInterrupt again ("aborted", 130); a run's dispatch
    # has its own handler (sinolc_dist.stages.dispatch.interruptible).  Worker processes never
    # import this module (sinolc_dist.cluster.worker_logs keeps their SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: Our keys, taken out before the rest goes to the dask-jobqueue class.
OWN_KEYS = {"tls", "minimum_jobs", "maximum_jobs", "torch_threads", "host", "dashboard_address",
            "watch_interval", "give_up_after", GPUS_PER_JOB}
#: Our keys that only we read (the scheduler options ``host``/``dashboard_address`` and ``tls`` aside).
_OURS_ONLY = ("minimum_jobs", "maximum_jobs", "torch_threads", "watch_interval", "give_up_after")
#: dask-jobqueue arguments that the core sets itself or that are internal.
_SET_HERE = {"self", "kwargs", "base_class_kwargs", "job_kwargs", "scheduler", "name", "n_workers",
             "job_cls", "loop", "asynchronous", "security", "protocol", "shared_temp_directory",
             "scheduler_cls"}
#: dask-jobqueue's renamed keyword arguments: the old name → the new one.
RENAMED = {"extra": "worker_extra_args", "env_extra": "job_script_prologue",
           "job_extra": "job_extra_directives", "header_skip": "job_directives_skip"}
#: What a scheduler's message is about, by its words, in order: the first topic a scheduler has a
#: hint for (:attr:`BatchScheduler.hints`) and whose words match names the profile key to change.
TOPICS: tuple[tuple[str, str], ...] = (
    ("queue-or-pe", r"no suitable queues"),
    ("queue", r"unknown queue|no such queue|invalid queue|invalid partition"
              r"|partition .*(invalid|unknown|not)"),
    ("h_rt", r"enforced h_rt"),
    ("pe", r"parallel environment"),
    ("node-size", r"requested node configuration is not available"),
    ("gpu", r"gres|gpu|accelerator"),
    ("memory", r"memory|mem=|h_vmem|mem_free|out_of_memory|memoryerror"),
    ("cpus", r"cpu count|ncpus|ppn|cpus"),
    ("walltime", r"time limit|walltime|h_rt|timeout"),
    ("account", r"account|allocation"),
    ("project", r"project"),
    ("qos", r"\bqos\b"),
    ("queue-named", r"partition|queue"),
    ("resource", r"resource"),
    ("workdir", r"chdir|working directory"),
    ("log-dir", r"output file|error file|can't open"),
    ("environment", r"not found|no module named|no such file"),
)
#: The profile keys every batch scheduler's topics point at.
COMMON_HINTS = {
    "queue": "'queue'", "walltime": "'walltime'", "queue-named": "'queue'",
    "workdir": ("'job_extra_directives' (the job's working directory: it must exist on the compute nodes; "
                "Grid Engine jobs start in the driver's directory unless -wd says otherwise)"),
    "log-dir": "'log_directory' (it must exist on the compute nodes)",
    "environment": "'job_script_prologue' (the modules and environment the worker's Python needs)",
}


def lifetime_args(walltime_s: int) -> list[str]:
    """``--lifetime``/``--lifetime-stagger`` that end a worker before its job's walltime.

    The margin is 10 % of the walltime, at least 5 min, at most 30 min and at
    most half the walltime; the stagger (a third of the margin) keeps the
    workers of jobs started together from all retiring at once.
    """
    margin = min(max(0.1 * walltime_s, 300.0), 1800.0, walltime_s / 2)
    return ["--lifetime", f"{int(walltime_s - margin)}s", "--lifetime-stagger", f"{int(margin / 3)}s"]


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


def run_command(*cmd: str) -> tuple[int, str]:
    """A scheduler command's exit status and its stdout and stderr (a command that fails to run: 1)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, proc.stdout + proc.stderr


class Scheduler(ABC):
    """A cluster kind as the package uses it: its profile check, its cluster, its care during a run."""

    #: The profile's top-level key (``local``, ``slurm``…).
    kind: ClassVar[str]
    #: Whether workers run as batch jobs (``sinolc-dist submit`` needs such a scheduler).
    batch: ClassVar[bool] = False

    @abstractmethod
    def check(self, settings: dict[str, Any]) -> None:
        """Refuse unknown keys and values of the wrong type or range, naming the key."""

    @abstractmethod
    def build(self, settings: dict[str, Any], run_dir: Path, scheduler_host: str | None = None) -> Any:
        """The Dask cluster a profile describes, its scheduler running here (see ``build_cluster``)."""

    def serve(self, settings: dict[str, Any], run_dir: Path) -> bool:
        """Whether this process served the run as a worker and is done (one-allocation mode's other tasks).

        Called before a driver touches the run directory; ``False`` (drive) by default.
        """
        return False

    def require_commands(self) -> None:  # noqa: B027 (a scheduler that submits nothing needs nothing)
        """Check that the commands the scheduler needs are on PATH (none by default)."""

    def scale(self, cluster: Any, settings: dict[str, Any]) -> None:  # noqa: B027 (a fixed size by default)
        """Ask for the profile's workers once the cluster runs (a fixed-size cluster has them)."""

    @contextmanager
    def supervise(self, cluster: Any, client: Client, settings: dict[str, Any],
                  run_dir: Path) -> Iterator[None]:
        """Look after the cluster while the driver uses it (by default nothing to do)."""
        yield


class BatchScheduler(Scheduler):
    """A dask-jobqueue scheduler: what SLURM, PBS and Grid Engine share; subclasses add their own."""

    batch = True
    #: dask-jobqueue's cluster class (its job class has the submit command and the job-id pattern).
    cluster_class: ClassVar[type[JobQueueCluster]]
    #: The profile key of the account a job is charged to (Grid Engine: ``project``).
    account_key: ClassVar[str] = "account"
    #: Whether a walltime may start with days (``D-HH:MM:SS``).
    walltime_days: ClassVar[bool] = False
    #: Seconds in one unit of a walltime written as one number.
    walltime_unit_s: ClassVar[int] = 1
    #: Topic (:data:`TOPICS`) → the profile key(s) it points at, beyond :data:`COMMON_HINTS`.
    hints: ClassVar[dict[str, str]] = {}
    #: The line prefix of the scheduler's directives in a job script (``#SBATCH``…).
    directive_prefix: ClassVar[str]
    #: The job's own id inside its script, as the shell expands it.
    job_id_variable: ClassVar[str]
    #: A command that prints the node a job runs on (``{id}``: the job id).
    where_command: ClassVar[str]
    #: Whether worker jobs are submitted from their log directory (where PBS puts their output).
    submit_in_log_directory: ClassVar[bool] = False
    #: Whether the driver submits worker jobs (one-allocation mode's workers are tasks of its own job).
    submits_workers: ClassVar[bool] = True

    @property
    def job_class(self) -> type[Job]:
        """dask-jobqueue's job class (its submit and cancel commands, its job-id pattern)."""
        return self.cluster_class.job_cls

    @property
    def renamed(self) -> dict[str, str]:
        """Old profile keys → their new names (``project`` is the old ``account``, where that is the key)."""
        return RENAMED | ({"project": "account"} if self.account_key == "account" else {})

    def valid_keys(self) -> set[str]:
        """Keys a profile may hold: the dask-jobqueue class's arguments and ours."""
        params = {p for f in (JobQueueCluster.__init__, Job.__init__, self.job_class.__init__)
                  for p in inspect.signature(f).parameters}
        return (params - _SET_HERE - set(self.renamed)) | OWN_KEYS

    def check(self, settings: dict[str, Any]) -> None:
        """Refuse unknown keys and values of the wrong type or range, naming the key."""
        s = settings
        unknown_keys(s, self.valid_keys(), self.kind, self.renamed)
        check_integers(s, (("cores", 1), ("processes", 1), ("job_cpu", 1), ("maximum_jobs", 1),
                           ("minimum_jobs", 0), ("torch_threads", 0), ("give_up_after", 1)))
        if is_int(s.get("cores")) and is_int(s.get("processes")) and s["processes"] > s["cores"]:
            raise bad(s, "processes",
                      f"cannot exceed cores ({s['cores']}): each worker process needs a thread")
        if "maximum_jobs" in s and s["maximum_jobs"] < s.get("minimum_jobs", 0):
            raise bad(s, "maximum_jobs", f"must be >= minimum_jobs ({s['minimum_jobs']})")
        interval = s.get("watch_interval", 1)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise bad(s, "watch_interval", "must be a number of seconds > 0")
        if s.get("memory") is not None and size_bytes(s["memory"]) <= 0:
            raise bad(s, "memory", "must be a positive size such as '64GB'")
        if s.get("walltime") is not None:
            self.walltime_seconds(s["walltime"])
        check_lists(s)
        if "tls" in s and not isinstance(s["tls"], bool):
            raise bad(s, "tls", "must be true or false")
        if s.get("scheduler_options") is not None and not isinstance(s["scheduler_options"], dict):
            raise bad(s, "scheduler_options", "must be a mapping of KEY: VALUE")
        check_strings(s)
        check_gpus(s)

    def walltime_seconds(self, value: object) -> int:
        """Seconds in a walltime written as this scheduler reads it.

        ``[D-]H:M:S`` (days where :attr:`walltime_days`), ``M:S``, or one number
        (of :attr:`walltime_unit_s` seconds).  It must be a string: YAML reads an
        unquoted ``24:00:00`` as the number 86400, which SLURM would take as minutes.
        """
        if not isinstance(value, str):
            raise ConfigError(f"cluster profile key 'walltime' must be a quoted string such as "
                              f"'24:00:00' (YAML reads unquoted 24:00:00 as a number); got {value!r}")
        m = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", value.strip())
        if m is None or (m[1] and not self.walltime_days):
            form = "[D-]HH:MM:SS" if self.walltime_days else "HH:MM:SS"
            raise ConfigError(f"cluster profile key 'walltime': {value!r} does not parse as {form}")
        parts = [int(p) for p in m[2].split(":")]
        if m[1]:
            parts += [0] * (3 - len(parts))
        elif len(parts) == 1:
            parts = [0, 0, parts[0] * self.walltime_unit_s]
        elif len(parts) == 2:
            parts = [0, *parts]
        hours, minutes, seconds = parts
        total = int(m[1] or 0) * 86400 + hours * 3600 + minutes * 60 + seconds
        if total <= 0:
            raise ConfigError(f"cluster profile key 'walltime': {value!r} is not a positive duration")
        return total

    def require_commands(self) -> None:
        """Check that the scheduler's submit and cancel commands are on PATH (before any start)."""
        for command in (self.job_class.submit_command, self.job_class.cancel_command):
            exe = shlex.split(str(command))[0]
            if shutil.which(exe) is None:
                raise ConfigError(
                    f"the {self.kind} cluster profile needs the `{exe}` command, which is not on PATH: run "
                    f"on a node that can submit {self.kind.upper()} jobs (or load the module providing it)"
                )

    def build(self, settings: dict[str, Any], run_dir: Path, scheduler_host: str | None = None) -> Any:
        """The dask-jobqueue cluster of a profile: TLS, loopback by default, worker lifetimes, job logs."""
        self.check(settings)
        s = {k: v for k, v in settings.items() if k not in _OURS_ONLY}
        if gpus := s.pop(GPUS_PER_JOB, None):
            s = gpu_settings(s, gpus)
            self.request_gpus(s, gpus)
        tls = s.pop("tls", True)
        opts = dict(s.pop("scheduler_options", None) or {})
        opts.update({k: s.pop(k) for k in ("host", "dashboard_address") if k in s})
        opts.setdefault("dashboard_address", "127.0.0.1:0")
        if scheduler_host:
            opts["host"] = scheduler_host
            opts.pop("interface", None)
        elif "host" not in opts and "interface" not in opts and not s.get("interface"):
            opts["host"] = "127.0.0.1"
        rundir = RunDir(Path(run_dir).resolve())
        s["log_directory"] = str(Path(s.get("log_directory") or rundir.worker_logs).absolute())
        s.setdefault("job_name", "sinolc-worker")
        s["worker_extra_args"] = self._worker_args(s)
        if tls:
            rundir.tls.mkdir(parents=True, exist_ok=True, mode=0o700)
            s["security"] = Security.temporary()
            s["shared_temp_directory"] = str(rundir.tls)
        try:
            return self.cluster_class(job_cls=watched(self.job_class, self), scheduler_options=opts, **s)
        except (TypeError, ValueError, OSError, RuntimeError) as exc:
            raise ConfigError(f"bad {self.kind} cluster profile: {' '.join(str(exc).split())}") from None

    def _worker_args(self, s: dict[str, Any]) -> list[str]:
        """The profile's worker options, plus a lifetime within the walltime and a loopback dashboard."""
        section = f"jobqueue.{s.get('config_name') or self.job_class.config_name}"
        extra = list(s.get("worker_extra_args") or dask.config.get(f"{section}.worker-extra-args", []))
        walltime = s.get("walltime") or dask.config.get(f"{section}.walltime", None)
        if walltime and not any(a.split("=")[0] == "--lifetime" for a in extra):
            extra += lifetime_args(self.walltime_seconds(walltime))
        return extra + worker_dashboard(extra)

    def scale(self, cluster: Any, settings: dict[str, Any]) -> None:
        """Scale adaptively between ``minimum_jobs`` and ``maximum_jobs``; wait for the first worker."""
        minimum = int(settings.get("minimum_jobs", 1))
        maximum = int(settings.get("maximum_jobs", max(minimum, 1)))
        cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
        if minimum:
            await_submission(cluster, self, settings)

    @contextmanager
    def supervise(self, cluster: Any, client: Client, settings: dict[str, Any],
                  run_dir: Path) -> Iterator[None]:
        """Replace worker jobs that die before connecting; stop a run whose jobs all do (a ConfigError)."""
        watchdog = JobWatchdog(cluster, self, settings)
        try:
            with watchdog:
                yield
        except RunStopped:  # the watchdog stopped a driver whose worker jobs all die at start
            raise ConfigError(watchdog.failure) from None

    def hint(self, message: str, settings: dict[str, Any] | None = None) -> str:
        """Which profile key a scheduler's message points at, with its current value.

        A guess from the message's words (a partition or queue → ``queue``, memory →
        ``memory``/``resource_spec``…); messages it cannot place get the usual suspects.
        """
        low = message.lower()
        keys = {**COMMON_HINTS, "account": f"'{self.account_key}'", "project": f"'{self.account_key}'",
                **self.hints}
        for topic, pattern in TOPICS:
            if topic in keys and re.search(pattern, low):
                now = [f"{k}: {settings[k]!r}" for k in dict.fromkeys(re.findall(r"'(\w+)'", keys[topic]))
                       if settings and settings.get(k) is not None]
                return f"change the {self.kind} profile's {keys[topic]}" + (f" (now {', '.join(now)})"
                                                                             if now else "")
        return (f"check the {self.kind} profile's queue, {self.account_key}, memory, walltime, resource_spec "
                "and job_extra_directives")

    @abstractmethod
    def request_gpus(self, s: dict[str, Any], n: int) -> None:
        """Add the job's request for ``n`` GPUs to the dask-jobqueue settings ``s``, in this scheduler's form.

        A request the profile already makes for another count is a :class:`ConfigError`.
        """

    @abstractmethod
    def job_status(self, job_id: str) -> tuple[str, str]:
        """Whether a job still waits or runs (``"alive"``), has ended, or is stuck in ``"error"``.

        Returns the state and the scheduler's own words about the job.
        """

    def driver_header(self, settings: dict[str, Any], walltime: str, queue: str | None,
                      rundir: RunDir, cpus: int, memory_gb: int) -> list[str]:
        """The driver job's directives: its name, queue, account, resources, walltime and log."""
        lines = self.driver_directives(queue or settings.get("queue"), settings.get(self.account_key),
                                       walltime, rundir, cpus, memory_gb)
        return [f"{self.directive_prefix} {line}" for line in lines if line]

    @abstractmethod
    def driver_directives(self, queue: str | None, account: str | None, walltime: str, rundir: RunDir,
                          cpus: int, memory_gb: int) -> list[str]:
        """The driver job's directive lines without their prefix (empty ones are dropped)."""

    def launch(self, command: str) -> str:
        """The driver script's command line that starts the driver (as it is, by default)."""
        return command

    def driver_output(self, rundir: RunDir) -> list[str]:
        """The driver script's lines that send its output to ``logs/driver-<job id>.out``."""
        return [f'exec >"{rundir.driver_job_output(self.job_id_variable)}" 2>&1']
