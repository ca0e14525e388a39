"""The local cluster: a :class:`distributed.LocalCluster` on loopback, its workers logging to files.

A local profile's keys are ``LocalCluster``'s and its nannies' arguments plus
``torch_threads``; nothing is submitted, so there are no commands to find, no
scaling and no job to watch.
"""

from __future__ import annotations

import inspect
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, Nanny

from sinolc_dist.cluster.checks import bad, check_integers, check_strings, size_bytes, unknown_keys
from sinolc_dist.cluster.scheduler import Scheduler
from sinolc_dist.cluster.worker_logs import WorkerLogFile
from sinolc_dist.rundir.layout import RunDir

#: Our keys in a local profile, taken out before the rest goes to ``LocalCluster``.
LOCAL_EXTRA = {"torch_threads"}


class Local(Scheduler):
    """Worker processes (or threads) on this machine."""

    kind = "local"

    def valid_keys(self) -> set[str]:
        """Keys a local profile may hold: the arguments of ``LocalCluster``, of its nannies, and ours."""
        params = {p for f in (LocalCluster.__init__, Nanny.__init__) for p in inspect.signature(f).parameters}
        return (params - {"self", "loop", "asynchronous", "worker_kwargs"}) | LOCAL_EXTRA

    def check(self, settings: dict[str, Any]) -> None:
        """Refuse unknown keys and values of the wrong type or range, naming the key."""
        s = settings
        unknown_keys(s, self.valid_keys(), self.kind)
        check_integers(s, (("n_workers", 1), ("threads_per_worker", 1), ("torch_threads", 0)))
        if s.get("processes") is not None and not isinstance(s["processes"], bool):
            raise bad(s, "processes", "must be true (a process per worker) or false (threads)")
        limit = s.get("memory_limit")
        if limit is not None and limit != "auto" and (isinstance(limit, bool) or size_bytes(limit) <= 0):
            raise bad(s, "memory_limit", "must be 'auto' or a positive size such as '8GB'")
        check_strings(s)

    def build(self, settings: dict[str, Any], run_dir: Path, scheduler_host: str | None = None) -> Any:
        """A ``LocalCluster`` on 127.0.0.1 with a process per worker, unless the profile says otherwise."""
        self.check(settings)
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

    @contextmanager
    def supervise(self, cluster: Any, client: Client, settings: dict[str, Any],
                  run_dir: Path) -> Iterator[None]:
        """Send each worker process's own log lines to ``logs/workers/local-<name>.log``."""
        if settings.get("processes", True):
            client.register_plugin(WorkerLogFile(RunDir(run_dir).worker_logs))
        yield


LOCAL = Local()
