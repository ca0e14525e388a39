"""What ``sinolc-dist status`` reports: chunk counts, the driver's life, errors by cause and file.

Reads the run directory and writes nothing of its own.  A run directory of
``run`` reports its ``state.sqlite``; one that only ``ingest`` has filled so far
(``ingest.sqlite`` and ``ingest.json``, no ``run.json``) reports the ingest's
chunks instead.  Where both exist, run chunks left pending because their
imagery is not ingested are counted with that reason.

Throughput and ETA are shown only while a driver holds the lock: after a kill
the last rate says nothing about when the chunks will be done.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from sinolc_dist.deliver.chunk_map import chunk_map_path
from sinolc_dist.errors import RunDirError
from sinolc_dist.grid import Grid
from sinolc_dist.imagery.pixels import failing_path
from sinolc_dist.regions.provinces import PROVINCES
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import FAILED as CHUNK_FAILED
from sinolc_dist.rundir.state import PENDING, STATUSES, StateStore
from sinolc_dist.stages.coverage import ProvinceCoverage, coverage_lines, region_coverage
from sinolc_dist.stages.lifecycle import FAILED, RUNNING, VANISHED, DriverRecord, read_record

#: Error groups shown (largest first).
MAX_GROUPS = 10
_PATH = re.compile(r"(?<![\w./\\])(?:/[\w.\-+@%~]+){2,}")  # absolute, two parts or more
_BYTES = re.compile(r"b'(?:[^'\\]|\\.)*'")  # checksums and other raw bytes, as Python prints them
_CHUNK = re.compile(r"\bc/\d+/\d+\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ErrorGroup:
    """Failed chunks sharing one cause (their error's first line, numbers normalised) and file."""

    stage: str
    cause: str
    file: str | None
    chunks: int


@dataclass(frozen=True)
class DriverStatus:
    """Whether a driver holds the run directory now (its PID and host) and how the last one ended.

    ``last.end`` is ``running`` for the live driver, else ``finished``,
    ``failed`` (with ``last.error``) or ``vanished`` (it died with no end
    recorded); ``last`` is ``None`` where no driver left a record.
    """

    alive: bool
    pid: int | None = None
    host: str | None = None
    started: str | None = None
    last: DriverRecord | None = None


@dataclass(frozen=True)
class StatusReport:
    """Per-province and total chunk counts, the driver, recomputations, throughput, ETA, errors.

    ``stage`` is the state reported (``run`` or ``ingest``); ``recomputed`` the
    chunks computed more than once (retried, rerun, or computed by a driver that
    vanished before recording them); ``waiting_for_ingest`` the pending run
    chunks whose imagery ``ingest failed`` or is ``not ingested`` yet; ``coverage``
    the km² with and without imagery per province (empty when no index tells it).
    """

    stage: str
    total: dict[str, int]
    provinces: dict[str, dict[str, int]]
    errors: list[ErrorGroup]
    driver: DriverStatus
    recomputed: int = 0
    waiting_for_ingest: dict[str, int] = field(default_factory=dict)
    chunks_per_hour: float = 0.0
    km2_per_hour: float = 0.0
    eta_hours: float | None = None
    updated: float = field(default_factory=time.time)
    coverage: list[ProvinceCoverage] = field(default_factory=list)
    delivered: list[Delivery] = field(default_factory=list)
    #: ``status/chunks.tif`` (one pixel per chunk, for QGIS) where a driver or ``status --map`` wrote it.
    chunk_map: str = ""


@dataclass(frozen=True)
class Delivery:
    """A province's COG in the run directory: where, and whether it holds every chunk as now recorded.

    ``current`` is false when chunks of the province are not done or finished
    after the file was written (a run releases it again when they are).
    """

    adcode: str
    name: str
    path: str
    current: bool


def deliveries(rundir: RunDir, provinces: dict[str, dict[str, int]],
               last_done: dict[str, float]) -> list[Delivery]:
    """The provincial COGs present, in adcode order, each marked current or not."""
    out = []
    for code in sorted(provinces):
        prov = PROVINCES.get(code)
        path = rundir.mosaic(code, prov.name_en) if prov else None
        if path is None or not path.exists():
            continue
        counts = provinces[code]
        complete = not counts.get(PENDING, 0) and not counts.get(CHUNK_FAILED, 0)
        out.append(Delivery(code, prov.name_en, str(path),
                            complete and path.stat().st_mtime >= last_done.get(code, 0.0)))
    return out


def error_cause(error: str) -> tuple[str, str | None]:
    """``(cause, file)`` of a chunk's error, so that one corrupt file is one group, not one per chunk.

    The cause is the error's first line with paths, chunk ids, bytes and numbers
    normalised; the file is the path it names (``None`` when it names none).
    """
    line = next((ln.strip() for ln in error.splitlines() if ln.strip()), "(no message)")
    path = failing_path(error)
    if path is None and (found := _PATH.search(line)):
        path = found.group(0).rstrip(".")
    masked = _PATH.sub("<file>", line.replace(path, "<file>") if path else line)
    return _NUMBER.sub("#", _CHUNK.sub("c/…", _BYTES.sub("b'…'", masked)))[:200], path


def _error_groups(stage: str, state: StateStore) -> Counter[tuple[str, str, str | None]]:
    groups: Counter[tuple[str, str, str | None]] = Counter()
    for error, n in state.error_counts():
        groups[(stage, *error_cause(error))] += n
    return groups


def driver_status(rundir: RunDir) -> DriverStatus:
    """The lock's live holder, if any, and the last driver's record (``vanished`` if it died unrecorded)."""
    holder = rundir.driver_holder()
    last = read_record(rundir)
    if holder is None and last is not None and last.end == RUNNING:
        last = replace(last, end=VANISHED)
    if holder is None:
        return DriverStatus(False, last=last)
    return DriverStatus(True, holder.get("pid"), holder.get("host"), holder.get("started"), last)


def _stage_of(rundir: RunDir) -> tuple[str, Path, Grid]:
    """The stage whose state to report, its state file and grid."""
    if rundir.config.is_file():
        return "run", rundir.state, rundir.read_config().grid
    ingest_config = rundir.ingest_config
    if rundir.ingest_state.exists() and ingest_config.is_file():
        try:
            grid = json.loads(ingest_config.read_text(encoding="utf-8"))["grid"]
        except (ValueError, KeyError) as exc:
            raise RunDirError(f"{ingest_config} is damaged ({exc}); restore it or ingest into a new "
                              "--run-dir") from None
        return "ingest", rundir.ingest_state, Grid.from_dict(grid)
    raise RunDirError(
        f"{rundir.root} is not a run directory (no run.json, no ingest.sqlite): give the --run-dir of "
        "an earlier `sinolc-dist run`/`ingest`/`demo`, or start one with `sinolc-dist run`"
    )


def _waiting_for_ingest(rundir: RunDir, pending: set) -> tuple[dict[str, int], Counter]:
    """Pending run chunks by why their imagery is missing, and the ingest's error groups."""
    with StateStore(rundir.ingest_state) as ingest:
        failed = set(ingest.chunk_ids(CHUNK_FAILED))
        waiting = set(ingest.chunk_ids(PENDING))
        groups = _error_groups("ingest", ingest)
    reasons = {"ingest failed": len(pending & failed), "not ingested": len(pending & waiting)}
    return {k: n for k, n in reasons.items() if n}, groups


def status(run_dir: Path) -> StatusReport:
    """Read a run's (or an ingest's) state and driver record without changing anything."""
    rundir = RunDir(Path(run_dir))
    stage, state_path, grid = _stage_of(rundir)
    driver = driver_status(rundir)
    total: Counter[str] = Counter(dict.fromkeys(STATUSES, 0))
    provinces: dict[str, Counter[str]] = defaultdict(Counter)
    with StateStore(state_path) as state:
        for codes, status_, n in state.status_groups():
            total[status_] += n
            for code in codes:
                provinces[code][status_] += n
        groups = _error_groups(stage, state)
        recomputed = state.recomputed()
        rate, _ = state.throughput()
        pending = set(state.chunk_ids(PENDING)) if stage == "run" and rundir.ingest_state.exists() else set()
        coverage = region_coverage(rundir, state)
        last_done = state.last_finished() if stage == "run" else {}
    waiting: dict[str, int] = {}
    if pending:
        waiting, ingest_groups = _waiting_for_ingest(rundir, pending)
        groups.update(ingest_groups)
    counts = {k: dict(v) for k, v in provinces.items()}
    delivered = deliveries(rundir, counts, last_done) if stage == "run" else []
    running_here = driver.alive and (driver.last is None or driver.last.stage == stage)
    per_hour = rate * 3600 if running_here else 0.0
    return StatusReport(
        stage, dict(total), counts,
        [ErrorGroup(*key, n) for key, n in groups.most_common(MAX_GROUPS)], driver, recomputed, waiting,
        chunks_per_hour=per_hour, km2_per_hour=per_hour * grid.nominal_chunk_km2,
        eta_hours=total[PENDING] / per_hour if per_hour and total[PENDING] else None, coverage=coverage,
        delivered=delivered, chunk_map=_chunk_map(rundir, stage),
    )


def _chunk_map(rundir: RunDir, stage: str) -> str:
    """The stage's chunk map, '' where none was written."""
    path = chunk_map_path(rundir, stage)
    return str(path) if path.is_file() else ""


def status_lines(report: StatusReport) -> list[str]:
    """The report's lines after the count table (the same fields as ``status --json``)."""
    lines = [_driver_line(report.driver), f"chunks computed more than once: {report.recomputed}"]
    if report.chunks_per_hour:
        eta = f"{report.eta_hours:,.1f} h" if report.eta_hours is not None else "none (nothing pending)"
        lines.append(f"recent throughput: {report.chunks_per_hour:,.0f} chunks/h, "
                     f"{report.km2_per_hour:,.0f} km²/h; ETA for the pending chunks: {eta}")
    elif report.driver.alive:
        lines.append(f"throughput and ETA: not measured yet (fewer than two {report.stage} chunks done "
                     "lately by the running driver)")
    else:
        lines.append("throughput and ETA: none (no driver is running)")
    if report.waiting_for_ingest:
        why = ", ".join(f"{n} {reason}" for reason, n in report.waiting_for_ingest.items())
        lines.append(f"pending chunks waiting for their imagery: {why} (see the ingest errors below; "
                     "finish `sinolc-dist ingest` and run again)")
    lines += coverage_lines(report.coverage)
    lines += _delivery_lines(report)
    if report.chunk_map:
        lines.append(f"chunk map (one pixel per chunk, for QGIS): {report.chunk_map} (refreshed by a running "
                     "driver; `status --map FILE.tif` writes one from the state)")
    if report.errors:
        lines.append("errors by cause and file (failed chunks):")
    lines += [f"  {g.chunks} × [{g.stage}] {g.cause}" + (f" — file {g.file}" if g.file else "")
              for g in report.errors]
    return lines


def _delivery_lines(report: StatusReport) -> list[str]:
    """Which provinces are delivered and where their files are (``status`` of a run)."""
    if report.stage != "run":
        return []
    current = [d for d in report.delivered if d.current]
    lines = [f"provinces delivered: {len(current)} of {len(report.provinces)}"]
    lines += [f"  {d.name} ({d.adcode}): {d.path}" + ("" if d.current else " (older than its chunks: "
                                                       "released again when they are done)")
              for d in report.delivered]
    return lines


def _driver_line(d: DriverStatus) -> str:
    last = d.last
    if d.alive:
        stage = f"{last.stage}, " if last is not None and last.end == RUNNING else ""
        return f"driver: running ({stage}PID {d.pid} on host {d.host}, started {d.started})"
    if last is None:
        return "driver: none running (no driver has recorded a start here)"
    who = f"{last.stage}, PID {last.pid} on host {last.host}, started {last.started}"
    if last.end == VANISHED:
        return (f"driver: none running; the last one ({who}) vanished: no end recorded "
                "(killed, out of memory or its node lost); run the same command to resume")
    if last.end == FAILED:
        return f"driver: none running; the last one ({who}) failed at {last.ended}: {last.error}"
    return f"driver: none running; the last one ({who}) finished at {last.ended}"
