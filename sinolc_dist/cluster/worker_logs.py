"""Where a local worker process's own log lines go: a file, not the driver's terminal.

Kept apart from :mod:`sinolc_dist.cluster.local` on purpose: workers import this module to
unpickle the plugin, and must not import dask-jobqueue's side effects with it
(:mod:`sinolc_dist.cluster.scheduler` restores Python's SIGINT handler, which would let a
terminal's Ctrl-C reach every worker as a KeyboardInterrupt traceback).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin


class _QuietFile(logging.FileHandler):
    """A log file where a line that cannot be written (a full disk) is lost without a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        """Drop the line quietly: a ``--- Logging error ---`` traceback would reach the driver's terminal."""


class WorkerLogFile(WorkerPlugin):
    """Sends a local worker process's log to ``<logs>/workers/local-<name>.log``.

    Local worker processes share the driver's terminal; their own lines (a heartbeat
    that fails while the driver closes the cluster after Ctrl-C, a memory warning)
    belong in a file next to the batch workers' logs, not among the driver's progress.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def setup(self, worker: Any) -> None:
        """Replace the worker process's terminal handlers with one file handler."""
        path = Path(self.folder) / f"local-{worker.name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _QuietFile(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        names = [None, *logging.root.manager.loggerDict]
        loggers = [logging.getLogger(n) for n in names]
        for logger in loggers:
            terminal = [h for h in logger.handlers if type(h) is logging.StreamHandler]
            for h in terminal:
                logger.removeHandler(h)
            if terminal:
                logger.addHandler(handler)
