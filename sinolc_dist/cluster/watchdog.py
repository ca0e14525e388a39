"""A watchdog over a batch cluster's worker jobs for the whole run.

dask-jobqueue replaces a worker that connected and was lost (the job was
killed, pre-empted or ran out of walltime), but a job that dies before its
worker connects (a node that fails at start, a module that is missing there,
a replacement job refused later in the run) stays "requested" for ever:
adaptive scaling waits on it and a run whose jobs all die that way waits with
it.  The watchdog asks the scheduler about such jobs every ``watch_interval``
seconds (a profile key, default 30), logs each dead one with the scheduler's
words and the profile key to change, and scales it down so adaptive scaling
submits a replacement.  After ``give_up_after`` such deaths (default 5) with no
worker connected, it stops the driver: the run ends with that error, the chunks
done so far kept (resume when the profile is fixed).
"""

from __future__ import annotations

import _thread
import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from sinolc_dist.cluster.jobstatus import dead_jobs

if TYPE_CHECKING:
    from sinolc_dist.cluster.scheduler import BatchScheduler

log = logging.getLogger("sinolc_dist.cluster.core")

#: Seconds between two looks at the worker jobs.
WATCH_INTERVAL = 30.0
#: Jobs that may die before connecting, with no worker connected, before the run is stopped.
GIVE_UP_AFTER = 5
#: The signal the watchdog interrupts the driver's thread with (dask-jobqueue takes SIGINT over).
STOP_SIGNAL = signal.SIGUSR2


class RunStopped(BaseException):  # like KeyboardInterrupt: no `except Exception` swallows it
    """Raised in the driver's thread when the watchdog gives up; ``open_cluster`` turns it into the error."""


class JobWatchdog:
    """Replaces worker jobs that die before their worker connects; stops a run whose jobs all do.

    Use as a context manager around the driver's work on the cluster.  When it
    gives up it sets :attr:`failure` and, where the driver runs in the main
    thread, interrupts it with :class:`RunStopped` (elsewhere it only logs).
    """

    def __init__(self, cluster: Any, scheduler: BatchScheduler, settings: dict[str, Any]) -> None:
        self.cluster, self.scheduler, self.settings = cluster, scheduler, settings
        self.interval = float(settings.get("watch_interval", WATCH_INTERVAL))
        self.give_up_after = int(settings.get("give_up_after", GIVE_UP_AFTER))
        self.deaths = 0  # since a worker was last seen connected
        self.failure = ""
        self._stop = threading.Event()
        self._closing = threading.Lock()  # no interrupt once the driver leaves the block
        self._thread = threading.Thread(target=self._watch, name="sinolc-job-watchdog", daemon=True)
        self._previous: Any = None
        self._can_stop = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> JobWatchdog:
        if self._can_stop:
            self._previous = signal.signal(STOP_SIGNAL, self._stop_driver)
        self._thread.start()
        return self

    def _stop_driver(self, signum: int, frame: FrameType | None) -> None:
        raise RunStopped(self.failure)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._closing:
            self._stop.set()
        self._thread.join(timeout=60)
        if self._can_stop:
            signal.signal(STOP_SIGNAL, self._previous)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.check():
                    with self._closing:
                        if not self._stop.is_set() and self._can_stop:
                            _thread.interrupt_main(STOP_SIGNAL)
                    return
            except Exception:  # a scheduler command that hangs or fails must not end the run
                log.exception("worker job watchdog: checking the jobs failed; trying again later")

    def check(self) -> bool:
        """Look once: replace jobs that died before connecting; ``True`` when the run should stop."""
        if self.cluster.scheduler_info.get("workers"):
            self.deaths = 0
        for dead in dead_jobs(self.cluster, self.scheduler, limit=100):
            self.deaths += 1
            log.warning("%s; submitting a replacement (%d such job(s) since a worker was last seen)",
                        dead.describe(self.scheduler, self.settings), self.deaths)
            self.cluster.sync(self.cluster.scale_down, [dead.name])
            if self.deaths >= self.give_up_after and not self.cluster.scheduler_info.get("workers"):
                self.failure = (
                    f"{self.deaths} {self.scheduler.kind} worker jobs died before their Dask workers "
                    "connected, "
                    f"the last one: {dead.describe(self.scheduler, self.settings)}; the run stopped "
                    "(the chunks done so far are kept: fix the profile and run again to resume)"
                )
                log.error(self.failure)
                return True
        return False
