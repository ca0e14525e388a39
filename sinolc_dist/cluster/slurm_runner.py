"""One-allocation mode (``slurm-runner``): the driver, the scheduler and every worker in one SLURM job.

For centres that forbid jobs which submit jobs, or that bill by the node: one
``sbatch -N K`` allocation runs ``srun sinolc-dist run … --cluster <profile>``,
so every task of the allocation starts the same command.  Task 0 is the
driver: it holds the run's lock and state as any driver does, starts the Dask
scheduler in its own process (with one worker beside it on its own GPU, unless
``worker_on_driver: false``) and writes the scheduler's address to
``<run-dir>/.dask-runner/scheduler-<job id>.json``.  Every other task becomes a
Dask worker through dask-jobqueue's :class:`~dask_jobqueue.slurm.SLURMRunner`
(its MPI-free runner: roles from ``SLURM_PROCID``, the address from the file)
and ends when the driver closes the cluster, or at once when the driver ends
without starting one (nothing left to do, or an error it printed: it leaves
``<job id>.ended`` beside the scheduler file), so no allocation idles to its
walltime.  Nothing is submitted during the run, so the state, resume and rerun
are those of the adaptive mode: a second allocation resumes where the first stopped.

Profile keys: ``queue``, ``account``, ``walltime``, ``nodes``, ``tasks`` (all
of them, the driver's included; default ``nodes`` × ``tasks_per_node``),
``tasks_per_node``, ``cores`` (CPUs and Dask threads per task), ``memory`` (per
task), ``gpus_per_task``, ``worker_on_driver``, ``job_extra_directives``,
``job_script_prologue``, ``interface``/``host``, ``dashboard_address``,
``local_directory``, ``tls``, ``torch_threads``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, Security

from sinolc_dist.cluster.checks import (
    bad,
    check_integers,
    check_lists,
    check_strings,
    size_bytes,
    unknown_keys,
)
from sinolc_dist.cluster.slurm import Slurm
from sinolc_dist.cluster.worker_logs import WorkerLogFile
from sinolc_dist.errors import ConfigError
from sinolc_dist.files import atomic_write_text
from sinolc_dist.rundir.layout import RunDir

#: Keys a ``slurm-runner`` profile may hold.
RUNNER_KEYS = {"queue", "account", "walltime", "nodes", "tasks", "tasks_per_node", "cores", "memory",
               "gpus_per_task", "worker_on_driver", "job_extra_directives", "job_script_prologue",
               "interface", "host", "dashboard_address", "local_directory", "tls", "torch_threads"}
#: The TLS files task 0 writes for the others, by the role they play.
_TLS_FILES = {"ca": "tls_ca_file", "cert": "tls_worker_cert", "key": "tls_worker_key"}


def allocation() -> tuple[int, int, str]:
    """The task's rank, the allocation's number of tasks and its job id, from SLURM's environment.

    Outside an allocation, or with fewer than two tasks, a :class:`ConfigError` saying how to start one.
    """
    env = os.environ
    if "SLURM_JOB_ID" not in env or "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        raise ConfigError("cluster kind 'slurm-runner' runs inside one SLURM allocation, as its tasks: "
                          "`sinolc-dist submit --cluster <profile>` writes and submits that job "
                          "(sbatch -N K + srun), or start the same command with `srun -n K` inside salloc; "
                          "outside an allocation use the 'slurm' profile (worker jobs) or 'local'")
    tasks = int(env["SLURM_NTASKS"])
    if tasks < 2:
        raise ConfigError(f"SLURM job {env['SLURM_JOB_ID']} runs 1 task: one-allocation mode needs at least "
                          "2 (the driver with the scheduler, and one or more workers); raise the profile's "
                          "'tasks' (sbatch -n) or 'nodes'")
    return int(env["SLURM_PROCID"]), tasks, env["SLURM_JOB_ID"]


class SlurmRunner(Slurm):
    """The driver, the scheduler and the workers as the tasks of one SLURM allocation."""

    kind = "slurm-runner"
    submits_workers = False

    def valid_keys(self) -> set[str]:
        """Keys a one-allocation profile may hold (:data:`RUNNER_KEYS`)."""
        return RUNNER_KEYS

    def check(self, settings: dict[str, Any]) -> None:
        """Refuse unknown keys and values of the wrong type or range, naming the key."""
        s = settings
        unknown_keys(s, RUNNER_KEYS, self.kind)
        check_integers(s, (("nodes", 1), ("tasks", 2), ("tasks_per_node", 1), ("cores", 1),
                           ("gpus_per_task", 0), ("torch_threads", 0)))
        if self.tasks(s) < 2:
            raise ConfigError("the slurm-runner profile gives 1 task: one-allocation mode needs at least 2 "
                              "(the driver with the scheduler, and one or more workers): set 'tasks', or "
                              "'nodes' and 'tasks_per_node'")
        if s.get("memory") is not None and size_bytes(s["memory"]) <= 0:
            raise bad(s, "memory", "must be a positive size such as '64GB'")
        for key in ("tls", "worker_on_driver"):
            if key in s and not isinstance(s[key], bool):
                raise bad(s, key, "must be true or false")
        if s.get("walltime") is not None:
            self.walltime_seconds(s["walltime"])
        check_lists(s)
        check_strings(s)

    def require_commands(self) -> None:
        """``sbatch`` and ``srun`` on PATH (inside the allocation only ``srun`` ran this command)."""
        for exe in ("sbatch", "srun"):
            if shutil.which(exe) is None:
                raise ConfigError(f"the slurm-runner cluster profile needs the `{exe}` command, which is not "
                                  "on PATH: run on a node of the SLURM cluster (or load its module)")

    def serve(self, settings: dict[str, Any], run_dir: Path) -> bool:
        """On a task other than 0: be a Dask worker until the driver closes the cluster; then ``True``.

        Task 0 (the driver) gets ``False`` at once.  Outside an allocation, or in
        one of a single task, a :class:`ConfigError`.
        """
        self.check(settings)
        rank, _, job_id = allocation()
        folder = RunDir(Path(run_dir).resolve()).root / ".dask-runner"
        ended = folder / f"{job_id}.ended"
        if rank == 0:  # the driver: when it ends, tasks still waiting for a scheduler end too
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            atexit.register(ended.touch)
            return False
        scheduler_file = _scheduler_file(folder, job_id)
        while not scheduler_file.exists():  # written once the driver starts its cluster
            if ended.exists():  # the driver ended without one (nothing to do, or an error it printed)
                return True
            time.sleep(0.5)
        from dask_jobqueue.slurm import SLURMRunner

        options = {**_worker_options(settings), "security": _worker_security(folder, job_id, settings)}
        try:
            SLURMRunner(scheduler=True, client=False, scheduler_file=str(_scheduler_file(folder, job_id)),
                        worker_options=options)
        except (KeyboardInterrupt, SystemExit):  # how the runner ends a worker task once its worker closed
            pass
        return True

    def build(self, settings: dict[str, Any], run_dir: Path, scheduler_host: str | None = None) -> Any:
        """Task 0's cluster: the scheduler here (its address in the scheduler file), a worker beside it."""
        self.check(settings)
        _, _, job_id = allocation()
        folder = RunDir(Path(run_dir).resolve()).root / ".dask-runner"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        security = Security.temporary() if settings.get("tls", True) else None
        if security is not None:
            for name, attr in _TLS_FILES.items():
                atomic_write_text(folder / f"{job_id}.{name}.pem", getattr(security, attr))
        host = settings.get("host") or (None if settings.get("interface") else "127.0.0.1")
        workers = 1 if settings.get("worker_on_driver", True) else 0
        options = _worker_options(settings)
        return LocalCluster(
            n_workers=workers, processes=True, host=host, interface=settings.get("interface"),
            dashboard_address=settings.get("dashboard_address", "127.0.0.1:0"), security=security,
            protocol="tls://" if security else None,
            scheduler_kwargs={"scheduler_file": str(_scheduler_file(folder, job_id))},
            threads_per_worker=options["nthreads"], resources=options.get("resources"),
            local_directory=options.get("local_directory"),
        )

    def scale(self, cluster: Any, settings: dict[str, Any]) -> None:
        """Nothing to ask: the allocation's tasks are the workers, connecting by themselves."""

    @contextmanager
    def supervise(self, cluster: Any, client: Client, settings: dict[str, Any],
                  run_dir: Path) -> Iterator[None]:
        """The worker beside the driver logs to ``logs/workers/local-<name>.log`` ; others to srun."""
        client.register_plugin(WorkerLogFile(RunDir(run_dir).worker_logs))
        yield

    def tasks(self, settings: dict[str, Any]) -> int:
        """The allocation's number of tasks, the driver's included."""
        return int(settings.get("tasks") or settings.get("nodes", 1) * settings.get("tasks_per_node", 1))

    def driver_header(self, settings: dict[str, Any], walltime: str, queue: str | None,
                      rundir: RunDir, cpus: int, memory_gb: int) -> list[str]:
        """The allocation: nodes and tasks, CPUs, memory and GPUs per task, walltime, the driver's log.

        The profile's ``walltime`` is the allocation's (else ``walltime``, ``submit``'s
        ``--driver-walltime``); ``cpus`` and ``memory_gb`` (a lone driver's) are not used.
        """
        s, cores = settings, int(settings.get("cores", 1))
        queue = queue or s.get("queue")
        lines = ["-J sinolc-run", f"-p {queue}" if queue else "",
                 f"-A {s['account']}" if s.get("account") else "",
                 f"-N {s['nodes']}" if s.get("nodes") else "", f"-n {self.tasks(s)}",
                 f"--ntasks-per-node={s['tasks_per_node']}" if s.get("tasks_per_node") else "",
                 f"--cpus-per-task={cores}",
                 f"--mem-per-cpu={size_bytes(s['memory']) // 2**20 // cores}M" if s.get("memory") else "",
                 f"--gpus-per-task={s['gpus_per_task']}" if s.get("gpus_per_task") else "",
                 f"-t {s.get('walltime') or walltime}", f"-o {rundir.driver_job_output('%j')}",
                 *s.get("job_extra_directives", [])]
        return [f"{self.directive_prefix} {line}" for line in lines if line]

    def launch(self, command: str) -> str:
        """The allocation's one command: ``srun`` starts it on every task (task 0 drives, the rest work)."""
        return f"srun --kill-on-bad-exit=0 --label {command}"


def _scheduler_file(folder: Path, job_id: str) -> Path:
    """Where task 0 writes the scheduler's address for this allocation (its job id in the name)."""
    return folder / f"scheduler-{job_id}.json"


def _worker_options(settings: dict[str, Any]) -> dict[str, Any]:
    """A worker's threads, GPU resource, scratch and dashboard, as the profile asks."""
    options: dict[str, Any] = {"nthreads": int(settings.get("cores", 1)), "dashboard_address": "127.0.0.1:0"}
    if settings.get("gpus_per_task"):
        options["resources"] = {"GPU": 1}
    if settings.get("local_directory"):
        options["local_directory"] = os.path.expandvars(settings["local_directory"])
    if settings.get("interface"):
        options["interface"] = settings["interface"]
    return options


def _worker_security(folder: Path, job_id: str, settings: dict[str, Any]) -> Security | None:
    """The TLS a worker task uses: task 0's certificate files (written before its scheduler file)."""
    if not settings.get("tls", True):
        return None
    paths = {name: str(folder / f"{job_id}.{name}.pem") for name in _TLS_FILES}
    return Security(tls_ca_file=paths["ca"], tls_worker_cert=paths["cert"], tls_worker_key=paths["key"],
                    require_encryption=True)


SLURM_RUNNER = SlurmRunner()
