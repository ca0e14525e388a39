"""The driver's live view of a dispatch: every chunk's state in memory, a log line a minute, a map.

:class:`LiveRun` starts from the state file (one read) and follows the
dispatch as a watcher of the :class:`~sinolc_dist.stages.dispatch.Dispatcher`:
chunks in flight are ``running``, a chunk that failed an attempt and waits for
the next is ``retried``, recorded ones ``done`` or ``failed``.  A thread of its
own writes, every ``sinolc.live.log-interval`` seconds (``dask.config``,
default 60), one line to ``logs/driver.log``: done/failed/pending, px/s and
the ETA, so a batch job's log tells the progress without a terminal; and every
``sinolc.live.map-interval`` seconds (default 60) rewrites ``status/chunks.tif``
(:mod:`sinolc_dist.deliver.chunk_map`) while it changes.  The dashboard page
(:mod:`sinolc_dist.stages.dashboard`) reads the same object.

Updates come from the driver's thread, reads from the scheduler's and the
timer's: one lock guards the arrays, each reader takes a copy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.config
import numpy as np

from sinolc_dist.deliver import chunk_map
from sinolc_dist.deliver.chunk_map import RETRIED, RUNNING, STATE_CODES, ChunkLattice
from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, PENDING, ChunkResult
from sinolc_dist.stages.dispatch import RunReport

log = logging.getLogger("sinolc_dist.stages.live")
_DONE, _FAILED, _PENDING = STATE_CODES[DONE], STATE_CODES[FAILED], STATE_CODES[PENDING]
_RUNNING, _RETRIED = STATE_CODES[RUNNING], STATE_CODES[RETRIED]
#: States still to finish (the ETA's numerator).
_OPEN = (_PENDING, _RUNNING, _RETRIED)


def eta_text(remaining: int, per_second: float) -> str:
    """``HH:MM UTC (in 3.2 h)`` for ``remaining`` chunks at ``per_second``; ``?`` before a rate is known."""
    if not remaining:
        return "none (nothing left)"
    if per_second <= 0:
        return "?"
    seconds = remaining / per_second
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + seconds))
    return f"{when} (in {seconds / 3600:,.1f} h)"


class LiveRun:
    """One stage's chunks while its driver dispatches them (see the module docstring).

    ``stage`` names the map file (:func:`~sinolc_dist.deliver.chunk_map.chunk_map_path`); ``started`` is when
    the dispatch began (rates are measured from it).
    """

    def __init__(self, rundir: RunDir, state_path: Path, grid: Grid, stage: str) -> None:
        self.rundir, self.grid, self.stage = rundir, grid, stage
        self.state_path = Path(state_path)
        self.lattice = ChunkLattice.from_state(self.state_path, grid)
        self.map_path = chunk_map.chunk_map_path(rundir, stage)
        self.report = RunReport()
        self.started = time.time()
        self.in_flight: dict[ChunkId, str] = {}
        self.retry_errors: dict[ChunkId, str] = {}
        self.done_here: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._changed = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------- the dispatch's watcher
    def _set(self, cid: ChunkId, code: int) -> int | None:
        """Set a chunk's state code; its flat cell (``None`` outside the lattice)."""
        ij = self.lattice.index(cid)
        if ij is None:
            return None
        self.lattice.state[ij] = code
        self._changed = True
        return ij[0] * self.lattice.shape[1] + ij[1]

    def submitted(self, chunks: tuple[ChunkId, ...], key: str) -> None:
        """Chunks sent to the cluster under task ``key``: ``running`` (``retried`` ones stay so)."""
        with self._lock:
            for cid in chunks:
                self.in_flight[cid] = key
                if cid not in self.retry_errors:
                    self._set(cid, _RUNNING)

    def retrying(self, result: ChunkResult) -> None:
        """A chunk failed an attempt and goes back to the queue: ``retried``, with its error."""
        with self._lock:
            self.in_flight.pop(result.chunk, None)
            self.retry_errors[result.chunk] = result.error
            self._set(result.chunk, _RETRIED)
            ij = self.lattice.index(result.chunk)
            if ij is not None:
                self.lattice.attempts[ij] += 1

    def recorded(self, results: list[ChunkResult]) -> None:
        """Chunks the state now records done or failed: their state, seconds and attempts."""
        with self._lock:
            for r in results:
                self.in_flight.pop(r.chunk, None)
                retried = self.retry_errors.pop(r.chunk, None) is not None
                cell = self._set(r.chunk, _DONE if r.ok else _FAILED)
                if cell is None:
                    continue
                self.lattice.seconds.flat[cell] = r.seconds
                self.lattice.attempts.flat[cell] += 1 if retried else r.attempts
                if r.ok:
                    self.done_here.update(self.lattice.provinces_at(cell))

    def progress(self, report: RunReport) -> None:
        """The dispatch's report after a flush (counts, pixels, seconds)."""
        self.report = report

    # ------------------------------------------------------------------- reading
    def codes(self) -> np.ndarray:
        """A copy of the state codes (uint8, one per lattice cell)."""
        with self._lock:
            return self.lattice.state.copy()

    def counts(self) -> dict[str, int]:
        """Chunks per state now."""
        with self._lock:
            return self.lattice.counts()

    def rate(self) -> float:
        """Chunks finished (done or failed) per second since the dispatch began."""
        elapsed = time.time() - self.started
        return (self.report.done + self.report.failed) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The progress line: done/failed/pending (running, retrying), px/s, ETA."""
        n = self.counts()
        left = n[PENDING] + n[RUNNING] + n[RETRIED]
        elapsed = max(time.time() - self.started, 1e-9)
        return (f"progress: {n[DONE]:,} done, {n[FAILED]:,} failed, {left:,} pending "
                f"({n[RUNNING]:,} running, {n[RETRIED]:,} retrying) | {self.report.done:,} done by this "
                f"driver, {self.report.pixels / elapsed:,.0f} px/s | ETA {eta_text(left, self.rate())}")

    def write_map(self) -> Path:
        """Write the chunk map now (from a copy taken under the lock), creating ``status/``."""
        self.map_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            snapshot = ChunkLattice(self.grid, self.lattice.row0, self.lattice.col0,
                                    self.lattice.state.copy(), self.lattice.seconds.copy(),
                                    self.lattice.attempts.copy())
            self._changed = False
        return chunk_map.write_chunk_map(snapshot, self.map_path)

    # ----------------------------------------------------------------- the timer
    def start(self) -> None:
        """Write the map once, then start the timer thread (lines and map refreshes)."""
        self.write_map()
        self._thread = threading.Thread(target=self._tick, name="sinolc-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer; the last line and the final map, where chunks not recorded are pending again.

        (After an interrupt the state holds them pending: the map says what a resume will find.)
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for cid in {*self.in_flight, *self.retry_errors}:
                self._set(cid, _PENDING)
            self.in_flight.clear()
            self.retry_errors.clear()
        log.info(self.line())
        self.write_map()

    def _tick(self) -> None:
        every_line = float(dask.config.get("sinolc.live.log-interval", 60.0))
        every_map = float(dask.config.get("sinolc.live.map-interval", 60.0))
        last_line = last_map = time.time()
        while not self._stop.wait(min(every_line, every_map) / 4):
            now = time.time()
            if now - last_line >= every_line:
                last_line = now
                log.info(self.line())
            if now - last_map >= every_map and self._changed:
                last_map = now
                try:
                    self.write_map()
                except InputError as exc:  # a full disk: the dispatch goes on, the next refresh retries
                    log.warning("%s", exc)

    # ------------------------------------------------------------- the page's data
    def provinces(self) -> list[dict[str, Any]]:
        """Per province: chunks, done, failed, done %, chunks/h by this driver, ETA."""
        codes = self.codes().ravel()
        hours = max(time.time() - self.started, 1e-9) / 3600
        out = []
        for code, cells in sorted(self.lattice.provinces.items()):
            states = np.bincount(codes[cells], minlength=len(STATE_CODES) + 1)
            left = int(sum(states[c] for c in _OPEN))
            per_h = self.done_here[code] / hours
            out.append({"adcode": code, "chunks": len(cells), "done": int(states[_DONE]),
                        "failed": int(states[_FAILED]), "left": left,
                        "done_pct": round(100 * states[_DONE] / max(len(cells), 1), 1),
                        "chunks_per_h": round(per_h, 1), "eta": eta_text(left, per_h / 3600)})
        return out

    def chunk(self, cid: ChunkId) -> dict[str, Any] | None:
        """What the page shows on hover, from memory: state, attempts, seconds, task, last retry error."""
        ij = self.lattice.index(cid)
        if ij is None:
            return None
        with self._lock:
            code = int(self.lattice.state[ij])
            if not code:
                return None
            state = next(s for s, c in STATE_CODES.items() if c == code)
            return {"id": cid.key, "state": state, "attempts": int(self.lattice.attempts[ij]),
                    "seconds": float(self.lattice.seconds[ij]),
                    "provinces": list(self.lattice.provinces_at(ij[0] * self.lattice.shape[1] + ij[1])),
                    "task": self.in_flight.get(cid), "retry_error": self.retry_errors.get(cid)}


@contextmanager
def live_run(rundir: RunDir, state_path: Path, grid: Grid, stage: str) -> Iterator[LiveRun]:
    """A started :class:`LiveRun` for the block; stopped (last line, final map) when it ends."""
    live = LiveRun(rundir, state_path, grid, stage)
    live.start()
    try:
        yield live
    finally:
        live.stop()
