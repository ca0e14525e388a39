"""A driver's life in the run directory: the lock, a durable record of its end, its log lines.

:func:`driver_session` wraps a driver's whole work (``run``, ``rerun``, ``demo``,
``ingest``) in the single-driver lock and in ``driver.json``, written
``running`` when the driver starts and ``finished`` or ``failed`` (with the
error's line) when it ends.  A ``running`` record while nobody holds the lock
means the driver vanished (SIGKILL, out of memory, its node lost): only a
process that never reached its ``finally`` leaves one.  Each of these moments
is a line in ``logs/driver.log``, and so is every error leaving the session.

A resume after a vanished driver counts what it lost: chunks still pending
whose output shard that driver wrote were computed but never recorded; they
get one attempt more, so the state's ``attempts`` counts every computation
and ``status`` can report the chunks computed more than once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.deliver.cog import CogReport
from sinolc_dist.deliver.mosaics import mosaic_run
from sinolc_dist.errors import SinolcError
from sinolc_dist.files import atomic_write_text
from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import present_shards
from sinolc_dist.rundir.layout import RunDir, setup_logging
from sinolc_dist.rundir.state import PENDING, StateStore
from sinolc_dist.stages.workflow import load_profile

log = logging.getLogger("sinolc_dist.stages.lifecycle")
RUNNING, FINISHED, FAILED = "running", "finished", "failed"
#: What ``status`` calls a ``running`` record that no live driver holds.
VANISHED = "vanished"


@dataclass(frozen=True)
class DriverRecord:
    """One driver's start and end, as ``driver.json`` keeps it."""

    stage: str
    host: str
    pid: int
    started: str
    started_ts: float
    end: str = RUNNING
    ended: str | None = None
    error: str | None = None


def error_line(exc: BaseException) -> str:
    """An exception as one line: a :class:`SinolcError`'s message, else ``Type: message``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SinolcError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_record(rundir: RunDir) -> DriverRecord | None:
    """The last driver's record, or ``None`` when no driver wrote one (or it is unreadable)."""
    try:
        data = json.loads(rundir.driver_record.read_text(encoding="utf-8"))
        return DriverRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write(rundir: RunDir, record: DriverRecord) -> None:
    atomic_write_text(rundir.driver_record, json.dumps(asdict(record), indent=2))


def _lost_chunks(rundir: RunDir, since: float) -> list[ChunkId]:
    """Pending chunks whose output shard was written after ``since`` (by a driver that then died)."""
    if not (rundir.config.is_file() and rundir.state.exists()):
        return []
    grid = rundir.read_config().grid
    shards_dir = rundir.output / stores.OUTPUT_ARRAY / "c"
    fresh = {s for s in present_shards(rundir.output)
             if (shards_dir / str(s.row) / str(s.col)).stat().st_mtime >= since}
    if not fresh:
        return []
    with StateStore(rundir.state) as state:
        return [c for c in state.chunk_ids(PENDING) if grid.shard_of(c) in fresh]


def _resume_after(rundir: RunDir, stage: str, previous: DriverRecord) -> None:
    """Log the vanished driver and give the run chunks it computed unrecorded one attempt more."""
    # Whichever stage resumes, the run's lost chunks are counted once (they are the run's).
    lost = _lost_chunks(rundir, previous.started_ts) if previous.stage == "run" else []
    if lost:
        with StateStore(rundir.state) as state:
            state.add_attempts(lost)
    log.warning("%s after a vanished driver (%s, PID %d on host %s, started %s, no end recorded): "
                "%d chunk(s) it computed were not recorded: one attempt more each, computed again by the run",
                "resume" if stage == previous.stage else stage, previous.stage, previous.pid,
                previous.host, previous.started, len(lost))


@contextmanager
def driver_session(rundir: RunDir, stage: str) -> Iterator[DriverRecord]:
    """Hold the driver lock and record the driver's start and end in ``driver.json`` and the log.

    A refused lock leaves the record alone (the live driver owns it).  Any
    exception leaving the session is logged with its line, recorded as the
    driver's end, and propagates unchanged; a record that cannot be written at
    the end (a full disk) is a log line, never a second error hiding the first.
    """
    try:
        with rundir.driver_lock():
            previous = read_record(rundir)
            record = DriverRecord(stage, socket.gethostname(), os.getpid(), _now(), time.time())
            _write(rundir, record)
            log.info("driver started: %s, PID %d on host %s", stage, record.pid, record.host)
            try:
                if previous is not None and previous.end == RUNNING:
                    _resume_after(rundir, stage, previous)
                yield record
            except BaseException as exc:
                _end(rundir, replace(record, end=FAILED, ended=_now(), error=error_line(exc)))
                raise
            _end(rundir, replace(record, end=FINISHED, ended=_now()))
    except BaseException as exc:
        log.error("%s stopped: %s", stage, error_line(exc),
                  exc_info=None if isinstance(exc, SinolcError | KeyboardInterrupt) else exc)
        raise


def _end(rundir: RunDir, record: DriverRecord) -> None:
    try:
        _write(rundir, record)
    except SinolcError as exc:
        log.error("cannot record the driver's end (%s): %s", record.end, exc)
    log.info("driver %s: %s%s", record.end, record.stage, f": {record.error}" if record.error else "")


def mosaic_stage(rundir: RunDir, **options: Any) -> tuple[list[CogReport], list[str]]:
    """:func:`~sinolc_dist.deliver.mosaics.mosaic_run`, its start, result and failure in the driver log."""
    log.info("mosaic stage: started")
    try:
        reports, notes = mosaic_run(rundir, **options)
    except BaseException as exc:
        log.error("mosaic stage: failed: %s", error_line(exc))
        raise
    log.info("mosaic stage: %d COG(s) written%s", len(reports),
             "".join(f"; {note}" for note in notes))
    return reports, notes


def mosaic_command(rundir: RunDir, cluster: str | None = None,
                   **options: Any) -> tuple[list[CogReport], list[str]]:
    """The ``mosaic`` command: :func:`mosaic_stage` here, or with the provinces in parallel on ``cluster``.

    ``cluster`` is a profile name or path; the stage's lines go to ``logs/driver.log`` either way.
    """
    setup_logging(rundir)
    if cluster is None:
        return mosaic_stage(rundir, **options)
    kind, settings = load_profile(cluster)
    with open_cluster(kind, settings, rundir.root) as client:
        return mosaic_stage(rundir, client=client, **options)
