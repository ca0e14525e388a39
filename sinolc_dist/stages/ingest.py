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
   bounded in-flight :func:`~sinolc_dist.stages.dispatch.dispatch`; a chunk whose file
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

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.engine.ingest_task import EMPTY, IngestTask, ingest_shard
from sinolc_dist.errors import ChunkFailures, InputError, RunDirError
from sinolc_dist.files import atomic_write_text
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.imagery.index import build_index
from sinolc_dist.imagery.pixels import failing_path
from sinolc_dist.imagery.sources import Bounds, ImageryIndex, MosaicOptions
from sinolc_dist.regions.plan import make_plan
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir, check_frozen, setup_logging
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, StateStore
from sinolc_dist.stages.coverage import chunk_shares, record_coverage, require_overlap
from sinolc_dist.stages.dispatch import RunReport, dispatch, interruptible
from sinolc_dist.stages.lifecycle import driver_session
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
class IngestSummary:
    """What an ingest did (field names shared with the run's summary for the CLI's progress)."""

    rundir: RunDir
    dashboard: str = ""
    scheduler: str = ""
    planned: int = 0
    skipped: int = 0
    sources: int = 0
    indexed: int = 0
    redone: int = 0
    empty: int = 0
    no_imagery: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    failing_files: dict[str, int] = field(default_factory=dict)
    bands: int = 3
    report: RunReport = field(default_factory=RunReport)


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


def ingest_tasks(
    grid: Grid, chunks: Iterable[ChunkId], index: ImageryIndex, store: str
) -> Iterator[IngestTask]:
    """One task per input shard, carrying only the sources that meet that shard."""
    for sid, group in grid.by_shard(chunks).items():
        sources = index.overlapping(grid.window_bounds(grid.shard_window(sid)))
        yield IngestTask(grid, sid, group, store, sources, index.options)


def ingest(
    req: IngestRequest, on_start: Callable[[IngestSummary], None] = lambda s: None,
    on_progress: Callable[[RunReport, int], None] = lambda r, n: None,
) -> IngestSummary:
    """Index the sources and fill the region's chunks of the input store; resumable.

    Raises :class:`ChunkFailures` at the end when chunks failed or files could
    not be opened; any error before the first write leaves the run directory as it was.
    """
    wf = load_workflow(req.workflow, req.checkpoint)
    kind, settings = load_profile(req.cluster)
    grid = wf.grid
    options = MosaicOptions(model_bands(wf), req.resampling, req.order, req.scale)
    rundir = RunDir(Path(req.run_dir).absolute())  # tasks and job scripts carry absolute paths
    config = {"grid": grid.to_dict(), "region": req.region, "boundaries": req.boundaries,
              "zoom": req.zoom, "options": asdict(options), "workflow": req.workflow,
              "imagery": [str(Path(s).expanduser().absolute()) for s in req.imagery],
              "cluster": req.cluster, "retries": wf.run.retries, "max_in_flight": wf.run.max_in_flight}
    config = check_frozen(rundir.ingest_config, config, COMPATIBLE)
    if rundir.config.exists() and rundir.read_config()["grid"] != grid.to_dict():
        raise RunDirError(f"{rundir.root} holds a run on another grid than workflow {req.workflow!r}")
    if rundir.input.exists() and stores.open_array(rundir.input, grid).shape[0] != options.bands:
        raise InputError(f"{rundir.input} holds another band count than the model's {options.bands}")
    index_path = rundir.imagery_index
    previous = ImageryIndex.load(index_path) if index_path.exists() else None
    update = build_index(req.imagery, grid, options, req.zoom, previous)
    _require_footprints(update.index)
    plan = make_plan(req.region, grid, req.boundaries)
    require_overlap(update.index, plan.region, grid)
    shares = chunk_shares(grid, (c for c, _ in plan.chunks()), update.index)
    # ------------------------------------------------ nothing was written before this line
    rundir.create()
    setup_logging(rundir)
    index = update.index
    summary = IngestSummary(rundir, sources=len(index.sources), indexed=update.described,
                            unreadable=index.unreadable, bands=options.bands)
    for path, reason in index.unreadable.items():
        log.error("cannot open imagery %s: %s", path, reason)
    with driver_session(rundir, "ingest"):
        atomic_write_text(rundir.ingest_config, json.dumps(config, indent=2, sort_keys=True))
        index.save(index_path)
        stores.create_store(rundir.input, grid, "input", bands=options.bands,
                            attrs={"sinolc_source": "sinolc-dist ingest"})
        with StateStore(rundir.ingest_state) as state:
            state.add_chunks(plan.chunks())
            record_coverage(state, shares)
            status = {r.chunk: r.status for r in state.records()}
            redo = {c for c in _chunks_meeting(grid, update.changed) if status.get(c) in (DONE, FAILED)}
            if req.failed:
                redo |= {c for c, s in status.items() if s == FAILED}
            state.reset(sorted(redo))
            summary.redone, summary.planned = len(redo), len(status)
            todo = state.chunk_ids(PENDING)
            summary.skipped = summary.planned - len(todo) - state.count()[NO_IMAGERY]
            log.info("ingest %s: %d sources (%d indexed now), %d chunks planned, %d to do",
                     rundir.root, len(index.sources), update.described, summary.planned, len(todo))
            if todo:
                with interruptible(lambda: state.count()[DONE]), \
                        open_cluster(kind, settings, rundir.root) as client:
                    summary.dashboard = client.dashboard_link
                    summary.scheduler = client.scheduler.address
                    on_start(summary)
                    summary.report = dispatch(
                        client, state, ingest_tasks(grid, todo, index, str(rundir.input)),
                        wf.run.retries, wf.run.max_in_flight, lambda r: on_progress(r, len(todo)),
                        work=ingest_shard)
            else:
                on_start(summary)
            records = list(state.records())
    summary.empty = sum(r.status == DONE and r.checksum == EMPTY for r in records)
    summary.no_imagery = sum(r.status == NO_IMAGERY for r in records)
    failing = Counter(failing_path(r.error or "") for r in records if r.status == FAILED)
    summary.failing_files = {p: n for p, n in failing.most_common() if p}
    failed = sum(r.status == FAILED for r in records)
    if failed or summary.unreadable:
        raise ChunkFailures(
            f"{failed} chunk(s) failed, {len(summary.unreadable)} file(s) could not be opened "
            f"({', '.join([*summary.failing_files, *summary.unreadable][:3])}); replace or remove the "
            f"files and run `sinolc-dist ingest` again (add --failed to retry other failures)", summary)
    return summary


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
