"""The stages of one run directory in order: plan → infer → mosaic.

Library functions that the CLI (and tests) call: :func:`run` resumes or starts
a run (a second call skips finished chunks), :func:`rerun` runs chosen chunks
again and :func:`status` reads the state; the mosaic stage is
:func:`sinolc_dist.deliver.mosaics.mosaic_run`.  Each takes the run directory; nothing
here knows a scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.cluster.profiles import task_resources, torch_threads
from sinolc_dist.deliver.cog import CogReport
from sinolc_dist.engine.inference import compute_shard, write_shard
from sinolc_dist.engine.patches import ENGINE_TOPIC
from sinolc_dist.errors import ChunkFailures, InputError, RunDirError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.imagery import ImageryIndex, MosaicOptions, build_index
from sinolc_dist.legend import Legend, load_legend
from sinolc_dist.models.checkpoint import ModelSpec
from sinolc_dist.models.loader import ModelRef, check_model
from sinolc_dist.regions.plan import make_plan, record_plan
from sinolc_dist.regions.region import Region, resolve_region
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir, check_frozen, setup_logging
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, StateStore
from sinolc_dist.stages.coverage import apply_run_coverage, require_overlap, run_index
from sinolc_dist.stages.dispatch import RunReport, dispatch, interruptible, shard_tasks
from sinolc_dist.stages.lifecycle import driver_session, mosaic_stage
from sinolc_dist.stages.verify import stale_chunks
from sinolc_dist.stages.workflow import ModelChoice, Workflow, load_profile, load_workflow
from sinolc_dist.stages.workflow import model_ref as model_ref_from

log = logging.getLogger("sinolc_dist")
#: Settings that may change when a run is resumed; anything else must match.
COMPATIBLE = frozenset({"cluster", "retries", "max_in_flight"})


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


@dataclass
class RunSummary:
    """What a run did and wrote."""

    rundir: RunDir
    dashboard: str = ""
    scheduler: str = ""
    planned: int = 0
    skipped: int = 0
    report: RunReport = field(default_factory=RunReport)
    mosaics: list[CogReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _frozen_config(req: RunRequest, wf: Workflow, model: dict[str, Any], legend: Legend) -> dict[str, Any]:
    return {
        "workflow": req.workflow,
        "grid": wf.grid.to_dict(),
        "model": model,
        "legend": legend.to_dict(),
        "region": req.region,
        "boundaries": req.boundaries,
        "imagery": [str(Path(p).expanduser().absolute()) for p in req.imagery],
        "zoom": req.zoom,
        "cluster": req.cluster,
        "retries": wf.run.retries,
        "max_in_flight": wf.run.max_in_flight,
        "mosaic_crs": wf.mosaic_crs,
    }


def _direct_imagery(req: RunRequest, grid: Grid, bands: int) -> ImageryIndex | None:
    """Index ``run --imagery`` files (reusing an earlier index); none when reading the input store."""
    if not req.imagery:
        return None
    path = RunDir(Path(req.run_dir)).imagery_index
    previous = ImageryIndex.load(path) if path.exists() else None
    index = build_index(req.imagery, grid, MosaicOptions(bands=bands), req.zoom, previous).index
    if index.unreadable:
        raise InputError(
            f"cannot open {len(index.unreadable)} imagery file(s), e.g. "
            f"{next(iter(index.unreadable))}: replace or remove them (nothing was written)"
        )
    return index


def _imagery_gate(rundir: RunDir, state: StateStore) -> tuple[set[ChunkId], list[ChunkId]]:
    """Chunks whose imagery is not ingested yet, and done chunks whose imagery changed since.

    Only chunks that an ingest planned are gated: imagery written otherwise is trusted.
    """
    if not rundir.ingest_state.exists():
        return set(), []
    with StateStore(rundir.ingest_state) as ingest:
        ingested = ingest.finished()
        planned = set(ingest.chunk_ids()) - set(ingest.chunk_ids(NO_IMAGERY))
    waiting = planned - set(ingested)
    changed = sorted(c for c, t in state.finished().items() if ingested.get(c, 0.0) > t)
    return waiting, changed


class CheckedRun(NamedTuple):
    """A run request with every argument checked: what :func:`run` (and ``submit``) starts from."""

    wf: Workflow
    kind: str
    settings: dict[str, Any]
    region: Region
    model: dict[str, Any]
    model_ref: ModelRef
    spec: ModelSpec
    model_notes: list[str]
    imagery: ImageryIndex | None


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
    check_frozen(RunDir(Path(req.run_dir)).config, _frozen_config(req, wf, model, load_legend(spec.legend)),
                 COMPATIBLE)  # a run directory started otherwise is refused as `run` would refuse it
    index = run_index(req.run_dir, imagery)  # the imagery must meet the region: checked before any write
    if index is not None:
        require_overlap(index, region, wf.grid, "run --imagery" if imagery else "the ingested imagery")
    return CheckedRun(wf, kind, settings, region, model, model_ref, spec, model_notes, imagery)


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
    wf, kind, settings, region, model, model_ref, spec, model_notes, imagery = check_run(req)
    rundir = RunDir(Path(req.run_dir).absolute()).create()  # tasks and job scripts carry absolute paths
    setup_logging(rundir)
    summary = RunSummary(rundir, notes=list(model_notes))
    for note in model_notes:
        log.warning(note)
    with driver_session(rundir, "run"):
        config = rundir.freeze(_frozen_config(req, wf, model, load_legend(spec.legend)), COMPATIBLE)
        grid = Grid.from_dict(config["grid"])
        with StateStore(rundir.state) as state:
            planned_for = state.get_meta("plan_region")
            if planned_for is None:
                record_plan(make_plan(config["region"], grid, config["boundaries"]), rundir)
            elif planned_for != region.spec or state.get_meta("plan_grid") != grid.fingerprint:
                raise RunDirError(
                    f"{rundir.state} holds a plan for region {planned_for!r} on another grid or "
                    f"region than this run ({config['region']!r}); use a new --run-dir"
                )
            if imagery is not None:
                imagery.save(rundir.imagery_index)
            elif not rundir.input.exists():
                raise InputError(
                    f"no input imagery in {rundir.input}: run `sinolc-dist ingest` first, or give "
                    "`run --imagery FILES` to read the files directly (see README)"
                )
            else:
                stores.open_array(rundir.input, grid)
            stores.create_store(rundir.output, grid, "output",
                                attrs={"sinolc_model_sha256": config["model"]["sha256"]},
                                confidence=bool(config["model"].get("confidence")))
            stale = stale_chunks(state, grid, rundir.output,  # a damaged sample widens on the cluster
                                 widen_on=lambda: open_cluster(kind, settings, rundir.root))
            if stale:
                state.reset(stale)
                log.warning("%d chunk(s) recorded done have missing, unreadable or different output: %s",
                            len(stale), ", ".join(c.key for c in stale[:20]))
                summary.notes.append(f"{len(stale)} chunk(s) recorded done had missing, unreadable or "
                                     "different output and were recomputed (see logs/driver.log)")
            waiting, changed = _imagery_gate(rundir, state) if imagery is None else (set(), [])
            if changed:
                state.reset(changed)
                summary.notes.append(f"{len(changed)} chunk(s) were classified before their imagery "
                                     "was ingested again and were recomputed")
            summary.notes += apply_run_coverage(rundir, grid, state, direct=imagery is not None)
            counts = state.count()
            summary.planned = sum(counts.values())
            todo = state.chunk_ids(PENDING) if only is None else sorted(
                (set(only) | set(stale) | set(changed)) - set(state.chunk_ids(NO_IMAGERY)))
            left_waiting = waiting & set(todo)
            if left_waiting:
                todo = [c for c in todo if c not in waiting]
                summary.notes.append(
                    f"{len(waiting)} chunk(s) have no ingested imagery yet (pending or failed in "
                    f"{rundir.ingest_state.name}) and were left pending: finish `sinolc-dist ingest` "
                    "and run again"
                )
            summary.skipped = counts[DONE] if only is None else 0
            if counts[FAILED] and only is None:
                summary.notes.append(
                    f"{counts[FAILED]} chunk(s) failed earlier and are not retried by `run`: "
                    f"use `sinolc-dist rerun --run-dir {rundir.root} --failed`"
                )
            log.info("run %s: %d planned, %d done, %d to do", rundir.root, summary.planned,
                     counts[DONE], len(todo))
            if todo:
                with interruptible(lambda: state.count()[DONE]), \
                        open_cluster(kind, settings, rundir.root) as client:
                    summary.dashboard = client.dashboard_link
                    summary.scheduler = client.scheduler.address
                    client.subscribe_topic(ENGINE_TOPIC, lambda event: log.info("worker %s", event[1]))
                    on_start(summary)
                    tasks = shard_tasks(grid, todo, str(rundir.input), str(rundir.output),
                                        model_ref, imagery)
                    summary.report = dispatch(
                        client, state, tasks, config["retries"], config["max_in_flight"],
                        on_progress=lambda r: on_progress(r, len(todo)),
                        work=compute_shard, finish=write_shard, resources=task_resources(settings),
                    )
                    if req.mosaic:  # provinces in parallel on the run's own cluster
                        summary.mosaics, notes = mosaic_stage(rundir, client=client)
                        summary.notes.extend(notes)
            else:
                on_start(summary)
                if req.mosaic:  # nothing was computed: only stale or missing files are written
                    summary.mosaics, notes = mosaic_stage(rundir)
                    summary.notes.extend(notes)
        unfinished = _unfinished(rundir, summary.report.failed, counts[FAILED] if only is None else 0,
                                 left_waiting)
        if unfinished:  # inside the session: the driver's end records it
            raise ChunkFailures(unfinished, summary)
    return summary


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
    model = config["model"]
    choice = ModelChoice(plugin=model.get("plugin"), kwargs=model.get("kwargs") or {},
                         overrides=model.get("overrides") or {})
    req = RunRequest(rundir.root, config["region"], config["workflow"],
                     cluster or config["cluster"], model["checkpoint"], config["boundaries"],
                     model=choice, imagery=tuple(config.get("imagery") or ()), zoom=config.get("zoom"))
    return run(req, only=sorted(wanted), **callbacks)
