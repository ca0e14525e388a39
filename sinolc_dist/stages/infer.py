"""The stages of one run directory in order: plan → infer → mosaic.

Library functions that the CLI (and tests) call: :func:`run` resumes or starts
a run (a second call skips finished chunks), :func:`rerun` runs chosen chunks
again and :func:`status` reads the state; the mosaic stage is
:func:`sinolc_dist.deliver.mosaics.mosaic_run`.  Each takes the run directory; nothing
here knows a scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from distributed import Client

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.cluster.profiles import task_resources, torch_threads
from sinolc_dist.deliver.cog import CogReport
from sinolc_dist.engine.inference import ShardTask, compute_shard, shard_tasks, write_shard
from sinolc_dist.engine.patches import ENGINE_TOPIC
from sinolc_dist.errors import InputError, RunDirError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.imagery import CompositeOptions, ImageryIndex, build_index
from sinolc_dist.legend import Legend, load_legend
from sinolc_dist.models.checkpoint import ModelSpec
from sinolc_dist.models.loader import ModelRef, check_model
from sinolc_dist.regions.order import PROVINCE, ROW_MAJOR, dispatch_groups, parse_order, province_ranks
from sinolc_dist.regions.plan import make_plan, record_plan
from sinolc_dist.regions.region import Region, resolve_region
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.integrity import stale_chunks
from sinolc_dist.rundir.layout import RunDir, check_frozen
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, StateStore
from sinolc_dist.stages.coverage import apply_run_coverage, imagery_gate, require_overlap, run_index
from sinolc_dist.stages.dispatch import Dispatcher, RunReport
from sinolc_dist.stages.lifecycle import mosaic_stage
from sinolc_dist.stages.release import Release
from sinolc_dist.stages.stage import Stage, StageSummary
from sinolc_dist.stages.verify import on_cluster
from sinolc_dist.stages.workflow import ModelChoice, Workflow, load_profile, load_workflow
from sinolc_dist.stages.workflow import model_ref as model_ref_from

log = logging.getLogger("sinolc_dist")
#: Settings that may change when a run is resumed; anything else must match.
COMPATIBLE = frozenset({"cluster", "retries", "max_in_flight", "order"})


@dataclass(frozen=True)
class RunRequest:
    """What the user asked ``run`` to do."""

    run_dir: Path
    region: str
    workflow: str = "demo"
    cluster: str = "local"
    checkpoint: str | None = None
    boundaries: str | None = None
    mosaic: bool = True
    model: ModelChoice = field(default_factory=ModelChoice)
    imagery: tuple[str, ...] = ()
    zoom: int | None = None
    #: The dispatch order (``run.order``); ``None`` takes the workflow's.
    order: str | None = None


@dataclass
class RunSummary(StageSummary):
    """What a run did and wrote."""

    mosaics: list[CogReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def summary_lines(summary: RunSummary) -> list[str]:
    """The closing lines of ``run``/``rerun``/``demo``: counts, speed and what was written."""
    r = summary.report
    lines = [
        f"inference: {r.done} chunk(s) done, {r.failed} failed, {summary.skipped} skipped "
        f"(already done), {r.seconds:.1f} s, {r.px_per_s:,.0f} px/s",
        f"output store: {summary.rundir.output}",
    ]
    lines += [f"mosaic: {m.path} ({m.width}×{m.height} px, {m.bytes / 1e6:.2f} MB, COG valid: {m.valid})"
              for m in summary.mosaics]
    lines += [f"note: {note}" for note in summary.notes]
    lines.append(f"log: {summary.rundir.logs / 'driver.log'}")
    return lines


def _frozen_config(req: RunRequest, wf: Workflow, model: dict[str, Any], legend: Legend,
                   region: Region) -> RunConfig:
    """The configuration a run freezes in ``run.json``: what it was asked, resolved by the workflow."""
    return RunConfig(
        grid=wf.grid, workflow=req.workflow, model=model, legend=legend, region=req.region,
        boundaries=req.boundaries, imagery=tuple(str(Path(p).expanduser().absolute()) for p in req.imagery),
        zoom=req.zoom, cluster=req.cluster, retries=wf.run.retries, max_in_flight=wf.run.max_in_flight,
        mosaic_crs=wf.mosaic_crs, order=parse_order(req.order or wf.run.order, region.provinces),
    )


def _direct_imagery(req: RunRequest, grid: Grid, bands: int) -> ImageryIndex | None:
    """Index ``run --imagery`` files (reusing an earlier index); none when reading the input store."""
    if not req.imagery:
        return None
    path = RunDir(Path(req.run_dir)).imagery_index
    previous = ImageryIndex.load(path) if path.exists() else None
    index = build_index(req.imagery, grid, CompositeOptions(bands=bands), req.zoom, previous).index
    if index.unreadable:
        raise InputError(
            f"cannot open {len(index.unreadable)} imagery file(s), e.g. "
            f"{next(iter(index.unreadable))}: replace or remove them (nothing was written)"
        )
    return index


class CheckedRun(NamedTuple):
    """A run request with every argument checked: what :func:`run` (and ``submit``) starts from.

    ``config`` is what the run freezes in ``run.json`` (already checked against a recorded one).
    """

    wf: Workflow
    kind: str
    settings: dict[str, Any]
    region: Region
    model: dict[str, Any]
    model_ref: ModelRef
    spec: ModelSpec
    model_notes: list[str]
    imagery: ImageryIndex | None
    config: RunConfig


def check_run(req: RunRequest) -> CheckedRun:
    """Check every argument of a run (workflow, profile, region, model file, imagery), writing nothing.

    ``run`` and ``submit`` both call it first, so a mistake fails the same way,
    before a run directory is touched (or a driver job waits in a queue).
    """
    wf = load_workflow(req.workflow, req.checkpoint, req.model)
    kind, settings = load_profile(req.cluster)
    region = resolve_region(req.region, req.boundaries)
    model = wf.model.identify()
    model_ref = model_ref_from(model, torch_threads(settings))
    spec, model_notes = check_model(model_ref, wf.grid)
    imagery = _direct_imagery(req, wf.grid, len(spec.bands))
    frozen = _frozen_config(req, wf, model, load_legend(spec.legend), region)
    # A run directory started otherwise is refused here as `run` would refuse it.
    check_frozen(RunDir(Path(req.run_dir)).config, frozen.to_dict(), COMPATIBLE)
    index = run_index(req.run_dir, imagery)  # the imagery must meet the region: checked before any write
    if index is not None:
        require_overlap(index, region, wf.grid, "run --imagery" if imagery else "the ingested imagery")
    return CheckedRun(wf, kind, settings, region, model, model_ref, spec, model_notes, imagery, frozen)


class InferStage(Stage[RunSummary]):
    """The inference stage on the :class:`~sinolc_dist.stages.stage.Stage` skeleton.

    Constructing it checks the request (:func:`check_run`, nothing written);
    ``only`` restricts the work to given chunks (used by :func:`rerun`).
    """

    name = "run"

    def __init__(self, req: RunRequest, only: Iterable[ChunkId] | None = None) -> None:
        self.req, self.checked = req, check_run(req)
        super().__init__(req.run_dir, (self.checked.kind, self.checked.settings))
        self.only = None if only is None else set(only)
        self.config = self.checked.config  # what it asks to freeze; then what is in force
        self.grid = self.config.grid
        self.failed_before = 0
        self.waiting: set[ChunkId] = set()
        self.left_waiting: set[ChunkId] = set()
        self.groups: list[list[ChunkId]] = []
        self.release: Release | None = None

    @property
    def state_path(self) -> Path:
        """The run's ``state.sqlite``."""
        return self.rundir.state

    def summary(self) -> RunSummary:
        """A summary carrying the model's notes (also logged as warnings)."""
        for note in self.checked.model_notes:
            log.warning(note)
        return RunSummary(self.rundir, notes=list(self.checked.model_notes))

    def freeze(self) -> None:
        """Freeze the run's configuration (a resume with other settings is refused) and take its grid."""
        self.config = self.rundir.freeze(self.checked.config, COMPATIBLE)
        self.grid = self.config.grid

    def prepare(self, state: StateStore, summary: RunSummary) -> list[ChunkId]:
        """Plan once, open the stores, reset what must be recomputed, record coverage; the chunks to do."""
        self._plan(state)
        self._stores()
        redo = self._redo(state, summary)
        direct = self.checked.imagery is not None
        summary.notes += apply_run_coverage(self.rundir, self.grid, state, direct=direct)
        return self._todo(state, summary, redo)

    def _plan(self, state: StateStore) -> None:
        """Record the plan on a first call; refuse a state planned for another region or grid."""
        planned_for = state.get_meta("plan_region")
        if planned_for is None:
            record_plan(make_plan(self.config.region, self.grid, self.config.boundaries), self.rundir)
        elif planned_for != self.checked.region.spec or state.get_meta("plan_grid") != self.grid.fingerprint:
            raise RunDirError(
                f"{self.rundir.state} holds a plan for region {planned_for!r} on another grid or "
                f"region than this run ({self.config.region!r}); use a new --run-dir"
            )

    def _stores(self) -> None:
        """Save the direct imagery's index or check the input store; create the output store."""
        rundir, imagery = self.rundir, self.checked.imagery
        if imagery is not None:
            imagery.save(rundir.imagery_index)
        elif not rundir.input.exists():
            raise InputError(
                f"no input imagery in {rundir.input}: run `sinolc-dist ingest` first, or give "
                "`run --imagery FILES` to read the files directly (see README)"
            )
        else:
            stores.open_array(rundir.input, self.grid)
        stores.create_store(rundir.output, self.grid, "output",
                            attrs={"sinolc_model_sha256": self.config.model["sha256"]},
                            confidence=bool(self.config.model.get("confidence")))

    def _redo(self, state: StateStore, summary: RunSummary) -> set[ChunkId]:
        """Reset done chunks with damaged output or imagery changed since; note chunks waiting for imagery."""
        stale = stale_chunks(state, self.grid, self.rundir.output,  # a damaged sample widens on the cluster
                             widen=lambda: on_cluster(lambda: open_cluster(self.kind, self.settings,
                                                                           self.rundir.root),
                                                      self.grid, self.rundir.output))
        if stale:
            state.reset(stale)
            log.warning("%d chunk(s) recorded done have missing, unreadable or different output: %s",
                        len(stale), ", ".join(c.key for c in stale[:20]))
            summary.notes.append(f"{len(stale)} chunk(s) recorded done had missing, unreadable or "
                                 "different output and were recomputed (see logs/driver.log)")
        waiting, changed = imagery_gate(self.rundir, state) if self.checked.imagery is None else (set(), [])
        if changed:
            state.reset(changed)
            summary.notes.append(f"{len(changed)} chunk(s) were classified before their imagery "
                                 "was ingested again and were recomputed")
        self.waiting = waiting
        return set(stale) | set(changed)

    def _todo(self, state: StateStore, summary: RunSummary, redo: set[ChunkId]) -> list[ChunkId]:
        """The pending chunks (or ``only`` and what had to be redone), less those waiting for imagery."""
        counts = state.count()
        summary.planned = sum(counts.values())
        todo = state.chunk_ids(PENDING) if self.only is None else sorted(
            (self.only | redo) - set(state.chunk_ids(NO_IMAGERY)))
        self.left_waiting = self.waiting & set(todo)
        if self.left_waiting:
            todo = [c for c in todo if c not in self.waiting]
            summary.notes.append(
                f"{len(self.waiting)} chunk(s) have no ingested imagery yet (pending or failed in "
                f"{self.rundir.ingest_state.name}) and were left pending: finish `sinolc-dist ingest` "
                "and run again"
            )
        summary.skipped = counts[DONE] if self.only is None else 0
        self.failed_before = counts[FAILED] if self.only is None else 0
        if self.failed_before:
            summary.notes.append(
                f"{counts[FAILED]} chunk(s) failed earlier and are not retried by `run`: "
                f"use `sinolc-dist rerun --run-dir {self.rundir.root} --failed`"
            )
        log.info("run %s: %d planned, %d done, %d to do", self.rundir.root, summary.planned,
                 counts[DONE], len(todo))
        return self._ordered(state, todo)

    def _ordered(self, state: StateStore, todo: list[ChunkId]) -> list[ChunkId]:
        """``todo`` in the run's dispatch order, its groups of whole shards kept for :meth:`tasks`."""
        order = self.config.order or PROVINCE
        planned = [(r.chunk, r.provinces) for r in state.records()]  # one read of the state
        ranks = province_ranks(order, (provinces for _, provinces in planned))
        self.groups = dispatch_groups(self.grid, order, todo, planned, ranks)
        if order != ROW_MAJOR and len(self.groups) > 1:
            names = {p.adcode: p.name_en for p in self.checked.region.provinces}
            first = sorted(ranks, key=ranks.__getitem__)[:5]
            log.info("dispatch order %s: %d group(s) of whole shards, provinces first: %s", order,
                     len(self.groups), ", ".join(names.get(c, c) for c in first))
        return [cid for group in self.groups for cid in group]

    def on_cluster(self, client: Client) -> None:
        """Log the workers' engine events (model loads, patch sizes) in the driver log."""
        client.subscribe_topic(ENGINE_TOPIC, lambda event: log.info("worker %s", event[1]))

    def tasks(self, todo: list[ChunkId]) -> Iterator[ShardTask]:
        """One inference task per output shard, group after group of the dispatch order (``todo``'s)."""
        for group in self.groups:
            yield from shard_tasks(self.grid, group, str(self.rundir.input), str(self.rundir.output),
                                   self.checked.model_ref, self.checked.imagery)

    def dispatcher(self, client: Client, state: StateStore,
                   on_progress: Callable[[RunReport], None]) -> Dispatcher[ShardTask]:
        """Compute on a worker (a GPU where the profile has them), then write on the same worker.

        Unless the run delivers nothing (``--no-mosaic``), each province is
        released as the state records its last chunk (:class:`Release`).
        """
        self.release = Release(self.rundir, state, client) if self.req.mosaic else None
        return Dispatcher(client, state, self.config.retries, self.config.max_in_flight,
                          work=compute_shard, finish=write_shard, resources=task_resources(self.settings),
                          on_progress=on_progress,
                          on_record=self.release.recorded if self.release else lambda results: None)

    def deliver(self, summary: RunSummary, client: Client | None) -> None:
        """The provinces released during dispatch, then the mosaic stage for the rest on the same cluster.

        With nothing computed (``client`` ``None``) the stage runs here and
        writes only missing or stale files.
        """
        if not self.req.mosaic:
            return
        streamed = self.release.finish() if self.release else []
        summary.mosaics, notes = mosaic_stage(self.rundir, client=client)
        summary.mosaics = streamed + summary.mosaics
        summary.notes.extend(notes)

    def unfinished(self, summary: RunSummary) -> str:
        """Chunks failed now, failed earlier, or left waiting for imagery: one reason each."""
        return _unfinished(self.rundir, summary.report.failed, self.failed_before, self.left_waiting)


def run(
    req: RunRequest, on_start: Callable[[RunSummary], None] = lambda s: None,
    on_progress: Callable[[RunReport, int], None] = lambda r, n: None,
    only: Iterable[ChunkId] | None = None,
) -> RunSummary:
    """Start or resume a run: plan once, infer the pending chunks, mosaic.

    ``only`` restricts the work to given chunks (used by :func:`rerun`).
    Chunks the imagery does not touch are recorded ``no-imagery`` before dispatch.
    Raises :class:`ChunkFailures` at the end when chunks failed or were left pending
    (one reason each), and
    :class:`~sinolc_dist.errors.Interrupted` on SIGINT/SIGTERM (results recorded, worker jobs cancelled).
    """
    return InferStage(req, only).run(on_start, on_progress)


def _unfinished(rundir: RunDir, failed_now: int, failed_before: int, waiting: set[ChunkId]) -> str:
    """The one-line error of a run that ends with chunks failed or pending, one reason each ('' if none)."""
    reasons = []
    if failed_now:
        reasons.append(f"{failed_now} failed now (`sinolc-dist status --run-dir {rundir.root}` says why)")
    if failed_before:
        reasons.append(f"{failed_before} failed earlier, not retried by `run`")
    if failed_now or failed_before:
        reasons[-1] += f": fix the cause and run `sinolc-dist rerun --run-dir {rundir.root} --failed`"
    if waiting:
        with StateStore(rundir.ingest_state) as ingest:
            in_ingest = ingest.count()
        reasons.append(f"{len(waiting)} left pending without ingested imagery ({in_ingest[FAILED]} failed, "
                       f"{in_ingest[PENDING]} pending in {rundir.ingest_state.name}): complete "
                       "`sinolc-dist ingest`, then run again")
    return f"chunk(s) not classified: {'; '.join(reasons)}" if reasons else ""


def rerun(
    run_dir: Path, failed: bool = False, chunks: Iterable[str] = (), province: str | None = None,
    cluster: str | None = None, **callbacks: Any,
) -> RunSummary:
    """Run chosen chunks again: the failed ones, given ids, or a province's."""
    rundir = RunDir(Path(run_dir)).require()
    config = rundir.read_config()
    wanted: set[ChunkId] = {ChunkId.parse(c) for c in chunks}
    with StateStore(rundir.state) as state:
        records = list(state.records())
        known = {r.chunk for r in records}
        unknown = sorted(c.key for c in wanted - known)
        if unknown:
            raise RunDirError(f"chunk(s) {', '.join(unknown[:5])} are not in this run's plan")
        if failed:
            wanted |= {r.chunk for r in records if r.status == FAILED}
        if province:
            code = resolve_region(province).provinces[0].adcode
            wanted |= {r.chunk for r in records if code in r.provinces}
        state.reset(wanted)
    model = config.model
    choice = ModelChoice(plugin=model.get("plugin"), kwargs=model.get("kwargs") or {},
                         overrides=model.get("overrides") or {})
    req = RunRequest(rundir.root, config.region, config.workflow or "demo", cluster or config.cluster,
                     model["checkpoint"], config.boundaries, model=choice, imagery=config.imagery,
                     zoom=config.zoom)
    return run(req, only=sorted(wanted), **callbacks)
