"""Cluster profiles checked before anything starts: keys, values, walltimes, commands.

A profile's keys are the dask-jobqueue class's keyword arguments plus ours
(``tls``, ``minimum_jobs``, ``maximum_jobs``, ``torch_threads``, ``host``,
``dashboard_address``, and the job watchdog's ``watch_interval`` and
``give_up_after``); an unknown or renamed key, an impossible value or a
scheduler command missing from PATH is a :class:`ConfigError` naming the key.
"""


from __future__ import annotations

import functools
import inspect
import itertools
import re
import shlex
import shutil
from typing import Any

import dask_jobqueue
from dask.utils import parse_bytes
from dask_jobqueue.core import Job, JobQueueCluster
from distributed import LocalCluster, Nanny

from sinolc_dist.errors import ConfigError

JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
LOCAL_EXTRA = {"torch_threads"}
#: Our keys, taken out before the rest goes to the dask-jobqueue class.
_OWN = {"tls", "minimum_jobs", "maximum_jobs", "torch_threads", "host", "dashboard_address",
        "watch_interval", "give_up_after"}
#: dask-jobqueue arguments that this module sets itself or that are internal.
_SET_HERE = {"self", "kwargs", "base_class_kwargs", "job_kwargs", "scheduler", "name", "n_workers",
             "job_cls", "loop", "asynchronous", "security", "protocol", "shared_temp_directory",
             "scheduler_cls"}
_RENAMED = {"extra": "worker_extra_args", "env_extra": "job_script_prologue",
            "job_extra": "job_extra_directives", "header_skip": "job_directives_skip"}
_LISTS = ("worker_extra_args", "job_extra_directives", "job_script_prologue", "job_directives_skip")
#: Keys whose value is a string (a number or a list there is a mistake: an unquoted value in YAML).
_STRINGS = {"queue", "account", "project", "interface", "host", "dashboard_address", "job_name",
            "log_directory", "local_directory", "python", "resource_spec", "job_mem", "config_name",
            "shebang"}
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
    if kind not in JOBQUEUE:
        raise ConfigError(
            f"unknown cluster kind {kind!r}; known: local, {', '.join(sorted(JOBQUEUE))}"
        )
    return getattr(dask_jobqueue, JOBQUEUE[kind]).job_cls


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


def local_keys() -> set[str]:
    """Keys a local profile may hold: the arguments of ``LocalCluster``, of its nannies, and ours."""
    params = {p for f in (LocalCluster.__init__, Nanny.__init__) for p in inspect.signature(f).parameters}
    return (params - {"self", "loop", "asynchronous", "worker_kwargs"}) | LOCAL_EXTRA


def _check_local(settings: dict[str, Any]) -> None:
    unknown = set(settings) - local_keys()
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in the local cluster profile; "
                          f"valid keys: {', '.join(sorted(local_keys()))}")
    s = settings
    for key, low in (("n_workers", 1), ("threads_per_worker", 1), ("torch_threads", 0)):
        if s.get(key) is not None and (not _is_int(s[key]) or s[key] < low):
            raise _bad(s, key, f"must be an integer >= {low}")
    if s.get("processes") is not None and not isinstance(s["processes"], bool):
        raise _bad(s, "processes", "must be true (a process per worker) or false (threads)")
    limit = s.get("memory_limit")
    if limit is not None and limit != "auto" and (isinstance(limit, bool) or _bytes(limit) <= 0):
        raise _bad(s, "memory_limit", "must be 'auto' or a positive size such as '8GB'")
    _check_strings(s)


def _bad(settings: dict[str, Any], key: str, why: str) -> ConfigError:
    return ConfigError(f"cluster profile key {key!r} {why} (got {settings[key]!r})")


def _check_strings(settings: dict[str, Any]) -> None:
    for key in sorted(_STRINGS & set(settings)):
        if settings[key] is not None and not isinstance(settings[key], str):
            raise _bad(settings, key, "must be a string (quote it in the YAML)")


def check_profile(kind: str, settings: dict[str, Any]) -> None:
    """Refuse an unknown kind, unknown keys and values of the wrong type or range, naming the key.

    Every key a profile of ``kind`` (``local`` or a batch kind) may hold is
    checked here, so that nothing fails after a run directory is written.
    """
    if kind == "local":
        _check_local(settings)
        return
    unknown = set(settings) - valid_keys(kind)
    if unknown:
        renamed = {k: _renamed(kind)[k] for k in unknown if k in _renamed(kind)}
        hint = "".join(f"; {old!r} is now {new!r}" for old, new in sorted(renamed.items()))
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in the {kind} cluster profile{hint}; "
                          f"valid keys: {', '.join(sorted(valid_keys(kind)))}")

    s = settings
    bad = functools.partial(_bad, s)
    for key, low in (("cores", 1), ("processes", 1), ("job_cpu", 1), ("maximum_jobs", 1),
                     ("minimum_jobs", 0), ("torch_threads", 0), ("give_up_after", 1)):
        if key in s and s[key] is not None and (not _is_int(s[key]) or s[key] < low):
            raise bad(key, f"must be an integer >= {low}")
    if _is_int(s.get("cores")) and _is_int(s.get("processes")) and s["processes"] > s["cores"]:
        raise bad("processes", f"cannot exceed cores ({s['cores']}): each worker process needs a thread")
    if "maximum_jobs" in s and s["maximum_jobs"] < s.get("minimum_jobs", 0):
        raise bad("maximum_jobs", f"must be >= minimum_jobs ({s['minimum_jobs']})")
    interval = s.get("watch_interval", 1)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise bad("watch_interval", "must be a number of seconds > 0")
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
    if s.get("scheduler_options") is not None and not isinstance(s["scheduler_options"], dict):
        raise bad("scheduler_options", "must be a mapping of KEY: VALUE")
    _check_strings(s)
    if kind == "pbs" and isinstance(s.get("resource_spec"), str):
        _check_pbs_request(s)


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


def _check_pbs_request(s: dict[str, Any]) -> None:
    """The job must ask PBS for at least the threads and memory its worker will use."""
    request = pbs_request(s["resource_spec"])
    cores = s.get("cores")
    if _is_int(cores) and request.get("cpus", cores) < cores:
        raise ConfigError(
            f"cluster profile key 'resource_spec' asks {request['cpus']} CPU(s) but 'cores' is {cores}: "
            f"the worker would run more threads than the job has CPUs (got {s['resource_spec']!r})")
    memory = _bytes(s["memory"]) if s.get("memory") is not None else 0
    if "mem" in request and memory > request["mem"]:
        raise ConfigError(
            f"cluster profile key 'resource_spec' asks less memory (mem=) than 'memory' "
            f"({s['memory']!r}), the worker's limit: the scheduler would kill the job before Dask "
            f"spills or pauses; lower 'memory' or raise mem= (got {s['resource_spec']!r})")


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
