"""The ingest stage: imagery sources → the run directory's input store, resumable.

:func:`ingest` checks everything before it writes anything (workflow, cluster
profile, region, the sources: no match, no CRS, too few bands are errors),
then, holding the run directory's driver lock:

1. freezes its settings in ``ingest.json`` (grid, region, bands, resampling,
   order, scale, zoom; a resume with other values is refused);
2. saves the index of the sources in ``imagery-index.json`` (files are read once;
   a resume only stats them, and indexes new or modified ones);
3. records the region's chunks in ``ingest.sqlite`` (the same :class:`StateStore`
   as inference, kept apart from the run's ``state.sqlite``) with each chunk's
   share of footprint (:mod:`~sinolc_dist.stages.coverage`): chunks no source touches
   are recorded ``no-imagery`` and never dispatched; the chunks whose imagery
   changed since they were ingested are marked pending again;
4. dispatches one task per input shard on the cluster with the driver's
   bounded in-flight :class:`~sinolc_dist.stages.dispatch.Dispatcher`; a chunk whose file
   cannot be read is recorded failed at once with the file's path and GDAL's
   reason (it would fail the same way again), other failures are retried by the
   driver (``run.retries`` of the workflow) first.

A second call does only what is pending (and what changed); ``failed=True``
also redoes the failed chunks.  Before anything is written, imagery that misses
the region entirely and a file that cannot be opened at all and was never
indexed (its footprint, so its chunks, are unknown) are errors; a file indexed
before that cannot be opened any more fails the chunks of its old footprint,
and the call ends with :class:`ChunkFailures` (exit status 1).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client

from sinolc_dist.engine.ingest_task import EMPTY, IngestTask, ingest_shard, ingest_tasks
from sinolc_dist.errors import InputError, RunDirError
from sinolc_dist.files import atomic_write_text
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.imagery.index import build_index
from sinolc_dist.imagery.pixels import failing_path
from sinolc_dist.imagery.sources import Bounds, CompositeOptions, ImageryIndex
from sinolc_dist.regions.plan import make_plan
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import check_frozen
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, StateStore
from sinolc_dist.stages.coverage import chunk_shares, record_coverage, require_overlap
from sinolc_dist.stages.dispatch import Dispatcher, RunReport
from sinolc_dist.stages.stage import Stage, StageSummary
from sinolc_dist.stages.workflow import Workflow, load_profile, load_workflow

log = logging.getLogger("sinolc_dist.imagery")
#: Settings that may change when an ingest is resumed (the files are re-checked anyway).
COMPATIBLE = frozenset({"imagery", "workflow", "cluster", "retries", "max_in_flight"})


@dataclass(frozen=True)
class IngestRequest:
    """What the user asked ``ingest`` to do."""

    run_dir: Path
    imagery: tuple[str, ...]
    region: str
    workflow: str = "demo"
    cluster: str = "local"
    checkpoint: str | None = None
    boundaries: str | None = None
    zoom: int | None = None
    resampling: str = "bilinear"
    order: str = "newest"
    scale: float | None = None
    failed: bool = False


@dataclass
class IngestSummary(StageSummary):
    """What an ingest did beside what every stage reports: the sources' index, then its chunks."""

    bands: int = 3
    sources: int = 0
    indexed: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    failing_files: dict[str, int] = field(default_factory=dict)
    redone: int = 0
    empty: int = 0
    no_imagery: int = 0


def model_bands(wf: Workflow) -> int:
    """Bands the workflow's model takes: its checkpoint's, or 3 (RGB) when none is named."""
    overrides = dict(wf.model.overrides)
    if wf.model.plugin is not None:
        return len(overrides.get("bands", ("red", "green", "blue")))
    if not wf.model.checkpoint:
        return 3
    from sinolc_dist.models.checkpoint import input_bands  # torch, on the driver only

    return input_bands(wf.model.checkpoint_path(), overrides)


def _chunks_meeting(grid: Grid, bounds: Iterable[Bounds]) -> set[ChunkId]:
    out: set[ChunkId] = set()
    for b in bounds:
        out.update(grid.chunks_in(grid.bounds_window(*b)))
    return out


def _require_footprints(index: ImageryIndex) -> None:
    """Refuse files that cannot be opened and were never indexed: the chunks they cover are unknown."""
    known = {s.path for s in index.sources}
    new = {p: why for p, why in index.unreadable.items() if p not in known}
    if new:
        path, why = next(iter(new.items()))
        raise InputError(f"cannot open {len(new)} imagery file(s), e.g. {path} ({why}): its footprint "
                         "is unknown, so are its chunks; replace or leave it out (nothing was written)")


class IngestStage(Stage[IngestSummary]):
    """The ingest stage on the :class:`~sinolc_dist.stages.stage.Stage` skeleton.

    Constructing it checks everything before anything is written: the
    workflow, profile, frozen settings, the run directory's grid and bands,
    the sources' index, and that the imagery meets the region.  Failed chunks
    do not fail the driver (``driver.json`` says ``finished``); the call ends
    with :class:`ChunkFailures` after it.
    """

    name = "ingest"
    failures_end_driver = False

    def __init__(self, req: IngestRequest) -> None:
        wf = load_workflow(req.workflow, req.checkpoint)
        super().__init__(req.run_dir, load_profile(req.cluster))
        self.req, self.wf, self.grid = req, wf, wf.grid
        self.options = CompositeOptions(model_bands(wf), req.resampling, req.order, req.scale)
        self.config = check_frozen(self.rundir.ingest_config, self._config(), COMPATIBLE)
        self._check_rundir()
        index_path = self.rundir.imagery_index
        previous = ImageryIndex.load(index_path) if index_path.exists() else None
        self.update = build_index(req.imagery, self.grid, self.options, req.zoom, previous)
        self.index = self.update.index
        _require_footprints(self.index)
        self.plan = make_plan(req.region, self.grid, req.boundaries)
        require_overlap(self.index, self.plan.region, self.grid)
        self.shares = chunk_shares(self.grid, (c for c, _ in self.plan.chunks()), self.index)
        self.failed = 0

    def _config(self) -> dict[str, Any]:
        """The settings ``ingest.json`` freezes."""
        req, wf = self.req, self.wf
        return {"grid": self.grid.to_dict(), "region": req.region, "boundaries": req.boundaries,
                "zoom": req.zoom, "options": asdict(self.options), "workflow": req.workflow,
                "imagery": [str(Path(s).expanduser().absolute()) for s in req.imagery],
                "cluster": req.cluster, "retries": wf.run.retries, "max_in_flight": wf.run.max_in_flight}

    def _check_rundir(self) -> None:
        """Refuse a run directory whose run has another grid, or whose input store another band count."""
        rundir = self.rundir
        if rundir.config.exists() and rundir.read_config().grid != self.grid:
            workflow = self.req.workflow
            raise RunDirError(f"{rundir.root} holds a run on another grid than workflow {workflow!r}")
        bands = self.options.bands
        if rundir.input.exists() and stores.open_array(rundir.input, self.grid).shape[0] != bands:
            raise InputError(f"{rundir.input} holds another band count than the model's {bands}")

    @property
    def state_path(self) -> Path:
        """The ingest's own ``ingest.sqlite``, apart from the run's state."""
        return self.rundir.ingest_state

    def summary(self) -> IngestSummary:
        """The index's counts; each file that cannot be opened is an error line in the log."""
        for path, reason in self.index.unreadable.items():
            log.error("cannot open imagery %s: %s", path, reason)
        return IngestSummary(self.rundir, sources=len(self.index.sources), indexed=self.update.described,
                             unreadable=self.index.unreadable, bands=self.options.bands)

    def freeze(self) -> None:
        """Write ``ingest.json`` and the sources' index, and create the input store."""
        atomic_write_text(self.rundir.ingest_config, json.dumps(self.config, indent=2, sort_keys=True))
        self.index.save(self.rundir.imagery_index)
        stores.create_store(self.rundir.input, self.grid, "input", bands=self.options.bands,
                            attrs={"sinolc_source": "sinolc-dist ingest"})

    def prepare(self, state: StateStore, summary: IngestSummary) -> list[ChunkId]:
        """Record the region's chunks and their coverage; redo changed (with ``--failed``, failed) ones."""
        state.add_chunks(self.plan.chunks())
        record_coverage(state, self.shares)
        status = {r.chunk: r.status for r in state.records()}
        redo = {c for c in _chunks_meeting(self.grid, self.update.changed) if status.get(c) in (DONE, FAILED)}
        if self.req.failed:
            redo |= {c for c, s in status.items() if s == FAILED}
        state.reset(sorted(redo))
        summary.redone, summary.planned = len(redo), len(status)
        todo = state.chunk_ids(PENDING)
        summary.skipped = summary.planned - len(todo) - state.count()[NO_IMAGERY]
        log.info("ingest %s: %d sources (%d indexed now), %d chunks planned, %d to do",
                 self.rundir.root, len(self.index.sources), self.update.described, summary.planned, len(todo))
        return todo

    def tasks(self, todo: list[ChunkId]) -> Iterator[IngestTask]:
        """One ingest task per input shard."""
        return ingest_tasks(self.grid, todo, self.index, str(self.rundir.input))

    def dispatcher(self, client: Client, state: StateStore,
                   on_progress: Callable[[RunReport], None]) -> Dispatcher[IngestTask]:
        """Warp on the workers, with the workflow's retries and in-flight bound."""
        return Dispatcher(client, state, self.wf.run.retries, self.wf.run.max_in_flight, work=ingest_shard,
                          on_progress=on_progress)

    def close(self, state: StateStore, summary: IngestSummary) -> None:
        """Count the empty and no-imagery chunks, the failed ones and the files that failed them."""
        records = list(state.records())
        summary.empty = sum(r.status == DONE and r.checksum == EMPTY for r in records)
        summary.no_imagery = sum(r.status == NO_IMAGERY for r in records)
        failing = Counter(failing_path(r.error or "") for r in records if r.status == FAILED)
        summary.failing_files = {p: n for p, n in failing.most_common() if p}
        self.failed = sum(r.status == FAILED for r in records)

    def unfinished(self, summary: IngestSummary) -> str:
        """Failed chunks and files that could not be opened, with what to do."""
        if not (self.failed or summary.unreadable):
            return ""
        return (f"{self.failed} chunk(s) failed, {len(summary.unreadable)} file(s) could not be opened "
                f"({', '.join([*summary.failing_files, *summary.unreadable][:3])}); replace or remove the "
                f"files and run `sinolc-dist ingest` again (add --failed to retry other failures)")


def ingest(
    req: IngestRequest, on_start: Callable[[IngestSummary], None] = lambda s: None,
    on_progress: Callable[[RunReport, int], None] = lambda r, n: None,
) -> IngestSummary:
    """Index the sources and fill the region's chunks of the input store; resumable.

    Raises :class:`ChunkFailures` at the end when chunks failed or files could
    not be opened; any error before the first write leaves the run directory as it was.
    """
    return IngestStage(req).run(on_start, on_progress)


def summary_lines(summary: IngestSummary) -> list[str]:
    """Human-readable lines describing an ingest, for the CLI."""
    r = summary.report
    mb_s = r.pixels * summary.bands / 1e6 / r.seconds if r.seconds else 0.0
    lines = [
        f"imagery: {summary.sources} source(s) ({summary.indexed} indexed now)",
        f"ingest: {r.done} chunk(s) done, {r.failed} failed, {r.retried} retried, {summary.skipped} "
        f"skipped (already done), {summary.redone} redone (imagery changed or --failed); "
        f"{r.seconds:.1f} s, {mb_s:.1f} MB/s",
        f"chunks no imagery touches (no-imagery, not dispatched): {summary.no_imagery}",
        f"chunks inside a footprint but without valid pixels (nodata): {summary.empty}",
        f"input store: {summary.rundir.input}",
    ]
    lines += [f"unreadable (chunks failed): {p} ({n} chunk(s))" for p, n in summary.failing_files.items()]
    lines += [f"cannot open: {p}: {why}" for p, why in summary.unreadable.items()]
    return [*lines, f"log: {summary.rundir.logs / 'driver.log'}"]
