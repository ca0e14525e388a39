"""One skeleton for the driver's stages: load → lock → freeze → state → cluster → dispatch → summary.

:class:`Stage` is a small base class with hooks (a template method, as
torchgeo's ``BaseTask`` calls its ``configure_*`` hooks): constructing a
stage is the load step (it checks every argument and writes nothing); then
:meth:`Stage.run` creates the run directory, starts its log, and inside
:func:`~sinolc_dist.stages.lifecycle.driver_session` (the single-driver lock
and ``driver.json``) calls :meth:`~Stage.freeze`, opens the stage's state,
asks :meth:`~Stage.prepare` for the chunks to do, opens the cluster only when
there are some, dispatches the stage's tasks with a
:class:`~sinolc_dist.stages.dispatch.Dispatcher`, then :meth:`~Stage.deliver`
and :meth:`~Stage.close`.  ``infer`` and ``ingest`` fill in these hooks;
neither writes the sequence itself.

A class rather than a function taking the stage's parts: the parts share what
the stage resolved while loading and preparing (the grid, the frozen
configuration, the imagery index, the chunks waiting for imagery), which a
subclass keeps as attributes instead of threading them through a dozen
callables; and a hook that a stage does not need (``on_cluster``,
``deliver``) simply keeps its default.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from distributed import Client

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.errors import ChunkFailures
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.rundir.layout import RunDir, setup_logging
from sinolc_dist.rundir.state import DONE, StateStore
from sinolc_dist.stages.dashboard import install_page
from sinolc_dist.stages.dispatch import Dispatcher, RunReport, Task, Watcher, interruptible
from sinolc_dist.stages.lifecycle import driver_session
from sinolc_dist.stages.live import live_run

log = logging.getLogger("sinolc_dist.stages.stage")


@dataclass
class StageSummary:
    """What every stage reports: where it ran, how many chunks it planned and skipped, what it dispatched."""

    rundir: RunDir
    dashboard: str = ""
    scheduler: str = ""
    #: The dashboard's live chunk map ('' when the scheduler serves no dashboard here).
    live_map: str = ""
    planned: int = 0
    skipped: int = 0
    report: RunReport = field(default_factory=RunReport)


S = TypeVar("S", bound=StageSummary)


class Stage(ABC, Generic[S]):
    """A driver stage over one run directory, filled in by hooks; :meth:`run` is the fixed sequence.

    ``cluster`` is the profile's ``(kind, settings)`` as
    :func:`~sinolc_dist.stages.workflow.load_profile` returns them.
    ``failures_end_driver`` says where chunks that did not finish raise
    :class:`ChunkFailures`: inside the driver session (``driver.json`` records
    the driver ``failed`` with the error's line: a run), or after it (the
    driver ``finished``; its state holds the failures: an ingest).
    """

    #: The stage's name in ``driver.json`` and the driver log.
    name: ClassVar[str]
    #: Whether chunks left unfinished fail the driver (see the class docstring).
    failures_end_driver: ClassVar[bool] = True
    #: The grid of the stage's chunks, set by each stage while loading (none: no live view).
    grid: Grid | None = None

    def __init__(self, run_dir: Path, cluster: tuple[str, dict[str, Any]]) -> None:
        self.rundir = RunDir(Path(run_dir).absolute())  # tasks and job scripts carry absolute paths
        self.kind, self.settings = cluster

    @property
    @abstractmethod
    def state_path(self) -> Path:
        """The stage's state store (one :class:`StateStore` per stage)."""

    @abstractmethod
    def summary(self) -> S:
        """The stage's summary before anything runs; also logs what loading found (the log is open)."""

    @abstractmethod
    def freeze(self) -> None:
        """Write the stage's frozen settings (and what the state needs beside them); under the lock."""

    @abstractmethod
    def prepare(self, state: StateStore, summary: S) -> list[ChunkId]:
        """Bring the state up to date and return the chunks to dispatch, in order."""

    @abstractmethod
    def tasks(self, todo: list[ChunkId]) -> Iterable[Task]:
        """The units of work for ``todo`` (one per shard)."""

    @abstractmethod
    def dispatcher(self, client: Client, state: StateStore,
                   on_progress: Callable[[RunReport], None]) -> Dispatcher[Any]:
        """The dispatch of this stage's tasks: what workers run, retries, the in-flight bound."""

    def on_cluster(self, client: Client) -> None:
        """Called once the cluster is up, before ``on_start``; nothing by default."""

    def deliver(self, summary: S, client: Client | None) -> None:
        """What follows the dispatch, on the stage's cluster (``None`` when nothing was dispatched)."""

    def close(self, state: StateStore, summary: S) -> None:
        """Complete the summary from the state before it closes; nothing by default."""

    @contextmanager
    def _watched(self, client: Client, summary: S) -> Iterator[list[Watcher]]:
        """The dispatch's live view while the block runs: the minute line, ``status/chunks.tif``, the page.

        None without a grid.  The page's outlines follow the frozen run's
        ``--boundaries`` (cnmaps' provinces without one).
        """
        if self.grid is None:
            yield []
            return
        with live_run(self.rundir, self.state_path, self.grid, self.name) as live:
            config = self.rundir.read_config() if self.rundir.config.is_file() else None
            summary.live_map = install_page(client, live, config.boundaries if config else None) or ""
            yield [live]

    def unfinished(self, summary: S) -> str:
        """The one-line error when chunks did not finish ('' when all did)."""
        return ""

    def run(self, on_start: Callable[[S], None] = lambda s: None,
            on_progress: Callable[[RunReport, int], None] = lambda r, n: None) -> S:
        """Run the stage: lock, freeze, state, cluster (only when chunks are to do), dispatch, summary.

        ``on_start`` gets the summary once the cluster is up (or at once when
        nothing is to do); ``on_progress`` the dispatch's report and the
        number of chunks dispatched, after every flush of the state.
        """
        if scheduler(self.kind).serve(self.settings, self.rundir.root):
            raise SystemExit(0)  # a worker task of a one-allocation run, served until its driver closed
        rundir = self.rundir.create()
        setup_logging(rundir)
        summary = self.summary()
        with driver_session(rundir, self.name):
            self.freeze()
            with StateStore(self.state_path) as state:
                todo = self.prepare(state, summary)
                if todo:
                    with interruptible(lambda: state.count()[DONE]), \
                            open_cluster(self.kind, self.settings, rundir.root) as client:
                        summary.dashboard = client.dashboard_link
                        summary.scheduler = client.scheduler.address
                        self.on_cluster(client)
                        with self._watched(client, summary) as watchers:
                            on_start(summary)
                            dispatcher = self.dispatcher(client, state, lambda r: on_progress(r, len(todo)))
                            dispatcher.watchers += watchers
                            summary.report = dispatcher.run(self.tasks(todo))
                            self.deliver(summary, client)
                else:
                    on_start(summary)
                    self.deliver(summary, None)
                self.close(state, summary)
            if self.failures_end_driver:
                self._raise_unfinished(summary)
        if not self.failures_end_driver:
            self._raise_unfinished(summary)
        return summary

    def _raise_unfinished(self, summary: S) -> None:
        message = self.unfinished(summary)
        if message:
            raise ChunkFailures(message, summary)
