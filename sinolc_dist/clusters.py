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
import subprocess
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


_ALL = ("slurm", "pbs", "sge")
#: What a scheduler's message is about → the profile key(s) to change, per kind (first match wins).
_CAUSES: list[tuple[str, dict[str, str]]] = [
    (r"no suitable queues", {"sge": "'queue', 'resource_spec' or the -pe line of 'job_extra_directives'"}),
    (r"unknown queue|no such queue|invalid queue|invalid partition|partition .*(invalid|unknown|not)",
     dict.fromkeys(_ALL, "'queue'")),
    (r"enforced h_rt", {"sge": "'walltime' (h_rt) or 'resource_spec' (h_vmem, h_cpu)"}),
    (r"parallel environment", {"sge": "'job_extra_directives' (the -pe line)"}),
    (r"gres|gpu|accelerator", {"slurm": "'job_extra_directives' (the --gres/--gpus line)",
                               "pbs": "'resource_spec' (ngpus=, or gpus= in the Torque form)",
                               "sge": "'resource_spec' (gpu=)"}),
    (r"memory|mem=|h_vmem|mem_free|out_of_memory|memoryerror",
     {"slurm": "'memory'", "pbs": "'resource_spec' (mem=) and 'memory'",
      "sge": "'resource_spec' (h_vmem=/mem_free=) and 'memory'"}),
    (r"cpu count|ncpus|ppn|cpus", {"slurm": "'job_cpu' and 'cores'", "pbs": "'resource_spec' (ncpus=, ppn=)",
                                   "sge": "the -pe line of 'job_extra_directives'"}),
    (r"time limit|walltime|h_rt|timeout", dict.fromkeys(_ALL, "'walltime'")),
    (r"account|allocation", {"slurm": "'account'", "pbs": "'account'", "sge": "'project'"}),
    (r"project", {"slurm": "'account'", "pbs": "'account'", "sge": "'project'"}),
    (r"\bqos\b", {"slurm": "'job_extra_directives' (the --qos line)"}),
    (r"partition|queue", dict.fromkeys(_ALL, "'queue'")),
    (r"resource", {"slurm": "'job_extra_directives'", "pbs": "'resource_spec'", "sge": "'resource_spec'"}),
    (r"chdir|working directory", dict.fromkeys(_ALL, (
        "'job_extra_directives' (the job's working directory: it must exist on the compute nodes; "
        "Grid Engine jobs start in the driver's directory unless -wd says otherwise)"))),
    (r"output file|error file|can't open", dict.fromkeys(_ALL, "'log_directory' (it must exist on the "
                                                               "compute nodes)")),
    (r"not found|no module named|no such file", dict.fromkeys(_ALL, (
        "'job_script_prologue' (the modules and environment the worker's Python needs)"))),
]


def profile_hint(kind: str, message: str, settings: dict[str, Any] | None = None) -> str:
    """Which key of a ``kind`` profile a scheduler's message points at, with its current value.

    A guess from the message's words (a partition or queue → ``queue``, memory →
    ``memory``/``resource_spec``…); messages it cannot place get the usual suspects.
    """
    low = message.lower()
    for pattern, keys in _CAUSES:
        if kind in keys and re.search(pattern, low):
            now = [f"{k}: {settings[k]!r}" for k in dict.fromkeys(re.findall(r"'(\w+)'", keys[kind]))
                   if settings and settings.get(k) is not None]
            return f"change the {kind} profile's {keys[kind]}" + (f" (now {', '.join(now)})" if now else "")
    account = "project" if kind == "sge" else "account"
    return (f"check the {kind} profile's queue, {account}, memory, walltime, resource_spec and "
            "job_extra_directives")


def job_status(kind: str, job_id: str) -> tuple[str, str]:
    """Whether a batch job still waits or runs (``"alive"``), has ended, or is stuck in error.

    Returns the state and the scheduler's own words about the job: SLURM's
    ``scontrol show job`` (state, reason, exit code), PBS's ``qstat -f`` (job
    state, exit status, comment), Grid Engine's ``qstat -j`` (the error reason
    of a job in state E) or, once it ended, ``qacct -j`` (failed, exit status).
    """
    def call(*cmd: str) -> tuple[int, str]:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 1, str(exc)
        return proc.returncode, proc.stdout + proc.stderr

    if kind == "slurm":
        rc, out = call("scontrol", "show", "job", "-o", job_id)
        state = re.search(r"JobState=(\S+)", out)
        if rc or state is None:
            return "ended", " ".join(out.split()) or "no longer known to SLURM"
        if state[1] in ("PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING"):
            return "alive", state[1]
        return "ended", " ".join(m[0] for m in re.finditer(r"(JobState|Reason|ExitCode)=\S+", out))
    if kind == "pbs":
        rc, out = call("qstat", "-f", job_id)
        state = re.search(r"job_state = (\w)", out)
        if rc or state is None:
            return "ended", " ".join(out.split()) or "no longer known to the PBS server"
        if state[1] in "QHWTSRBU":
            return "alive", f"job_state = {state[1]}"
        return "ended", "; ".join(m[0].strip() for m in
                                  re.finditer(r"(job_state|exit_status|Exit_status|comment) = .*", out))
    rc, out = call("qstat", "-j", job_id)
    if rc == 0 and "do not exist" not in out:
        error = re.search(r"error reason\s+\d+:\s*(?:\S+ \S+ \[[^\]]*\]:\s*)?(.*)", out)
        return ("error", error[1].strip()) if error else ("alive", "")
    rc, acct = call("qacct", "-j", job_id)
    newest = acct.split("=" * 20)[-1] if rc == 0 else ""  # one record per run of this id
    words = "; ".join(" ".join(m[0].split()) for m in re.finditer(r"^(failed|exit_status) .*$", newest, re.M))
    return "ended", words or "no longer known to the Grid Engine qmaster"


def _job_logs(log_directory: str | None, job_id: str) -> list[Path]:
    """A job's non-empty log files, newest last (their names carry the job id)."""
    if not log_directory or not Path(log_directory).is_dir():
        return []
    files = [p for p in Path(log_directory).iterdir() if p.is_file() and p.stat().st_size
             and re.search(rf"(?<![0-9]){re.escape(job_id)}(?![0-9])", p.name)]
    return sorted(files, key=lambda p: p.stat().st_mtime)


def _log_tail(logs: list[Path], lines: int = 6) -> str:
    """``<file> ends: <its last lines>`` of the newest of a job's log files."""
    if not logs:
        return ""
    tail = logs[-1].read_text(errors="replace").strip().splitlines()[-lines:]
    return f"{logs[-1]} ends: " + " | ".join(line.strip() for line in tail)


def _scheduler_words(exc: BaseException) -> str:
    """What the scheduler said in a failed submission, on one line.

    dask-jobqueue's error holds the command's stdout and stderr; stderr is the
    scheduler's message, except for SLURM's PBS wrappers, which print sbatch's
    words to stdout inside a report of their own ("… and the output was: '…'").
    """
    text = str(exc)
    m = re.search(r"stdout:\n(.*?)\nstderr:\n(.*)", text, re.S)
    said = (m[2].strip() or m[1].strip()) if m else text
    wrapped = re.search(r"and the output was:\s*'(.*)'", said, re.S)
    return " ".join((wrapped[1] if wrapped else said).split())


def _watched(job_cls: type[Job], kind: str) -> type[Job]:
    """``job_cls`` recording each submission's outcome (adaptive scaling would only log it)."""

    class Watched(job_cls):  # type: ignore[misc,valid-type]
        submitted: ClassVar[list[str]] = []
        refusals: ClassVar[list[str]] = []

        async def _submit_job(self, script_filename: str) -> str:
            # qsub runs in the log directory: SLURM's PBS wrappers (slurm-wlm-torque) put the
            # job's output there (<script>.o<id>/.e<id>), their own -o/-e overriding the
            # script's #PBS lines. For a real PBS server the directory changes only PBS_O_WORKDIR.
            cwd = self.log_directory if kind == "pbs" and self.log_directory else None
            return await self._call([*shlex.split(self.submit_command), script_filename], cwd=cwd)

        async def start(self) -> None:
            try:
                await super().start()
            except (RuntimeError, ValueError) as exc:
                type(self).refusals.append(_scheduler_words(exc))
                self.status = Status.failed  # SpecCluster.close() asserts a started job's status
                raise
            type(self).submitted.append(str(self.job_id))

        async def close(self) -> None:
            await super().close()
            # dask-jobqueue leaves a deleted job "running"; SpecCluster.close() asserts that every
            # job it made and that is still referenced (a traceback suffices) is closed or failed.
            self.status = Status.closed

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
            job_cls=_watched(job_cls, kind), scheduler_options=opts, **s
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
            jobs = list(cluster.workers.values())  # the cluster's event loop changes the dict meanwhile
            wanted = {str(job.job_id) for job in jobs if getattr(job, "job_id", None)}
            for job_id in [j for j in job_cls.submitted if j in wanted][:4]:
                state, said = job_status(kind, job_id)
                if state == "alive" or cluster.scheduler_info.get("workers"):
                    continue
                logs = _job_logs(getattr(jobs[0], "log_directory", None) if jobs else None, job_id)
                if any("Registered to:" in p.read_text(errors="replace") for p in logs):
                    continue  # its worker did connect, and has gone since (retired, killed)
                tail = _log_tail(logs)
                what = "is in an error state" if state == "error" else "ended"
                hint = profile_hint(kind, f"{said} {tail.partition(' ends: ')[2]}", settings)
                raise ConfigError(
                    f"worker job {job_id} {what} before its Dask worker connected: {said}"
                    + (f"; its log {tail}" if tail else "")
                    + f"; {hint} "
                    "(`sinolc-dist submit --dry-run` prints the job script)"
                )
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
    if kind in _JOBQUEUE:
        require_commands(kind)
    cluster = build_cluster(kind, settings, run_dir or Path.cwd())
    # Until the first worker is in, a refusal's traceback from the event loop would only repeat
    # the ConfigError; a later one (a replacement job refused mid-run) is logged in full.
    quiet, tornado_log = _QuietRefusals(), logging.getLogger("tornado.application")
    tornado_log.addFilter(quiet)
    try:
        if kind in _JOBQUEUE:
            minimum = int(settings.get("minimum_jobs", 1))
            maximum = int(settings.get("maximum_jobs", max(minimum, 1)))
            cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
            if minimum:
                _await_submission(cluster, kind, settings)
        tornado_log.removeFilter(quiet)
        with Client(cluster, security=cluster.security) as client:
            yield client
    finally:
        cluster.close()
        tornado_log.removeFilter(quiet)
