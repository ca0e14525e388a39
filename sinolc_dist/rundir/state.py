"""Per-chunk state records, written by the driver alone, crash-safe.

SQLite in WAL mode: every batch of results is one transaction, so a driver
killed at any instant leaves either the batch or nothing.  Workers never touch
this file; they return results and the driver records them.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sinolc_dist.errors import RunDirError
from sinolc_dist.grid import ChunkId

PENDING, DONE, FAILED = "pending", "done", "failed"
#: A chunk that no imagery touches: recorded at planning time, never dispatched.
NO_IMAGERY = "no-imagery"
STATUSES = (PENDING, DONE, FAILED, NO_IMAGERY)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    col INTEGER NOT NULL,
    provinces TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    started REAL,
    finished REAL,
    seconds REAL,
    error TEXT,
    checksum TEXT,
    coverage REAL
);
CREATE INDEX IF NOT EXISTS chunks_status ON chunks(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


#: Batch systems' job-id variables, the first set wins (SLURM's PBS wrappers set SLURM_JOB_ID only).
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "JOB_ID")


def worker_label() -> str:
    """What a chunk's record calls the process computing it: its batch job (if any), host and PID.

    The job id leads from a chunk's record to the job's log and to its line in
    ``logs/driver.log``; ``host:pid`` alone outside a batch job.
    """
    where = f"{socket.gethostname()}:{os.getpid()}"
    job = next((os.environ[v] for v in JOB_ID_VARIABLES if os.environ.get(v)), None)
    return f"job {job.split('.')[0]} on {where}" if job else where


@dataclass(frozen=True)
class ChunkResult:
    """What a worker reports for one chunk.

    ``deterministic`` marks a failure that would recur on every attempt (a corrupt
    file): the driver records it failed at once instead of retrying.
    """

    chunk: ChunkId
    ok: bool
    worker: str = ""
    started: float = 0.0
    seconds: float = 0.0
    checksum: str = ""
    error: str = ""
    attempts: int = 1
    deterministic: bool = False


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk's row in the state."""

    chunk: ChunkId
    provinces: tuple[str, ...]
    status: str
    attempts: int
    error: str | None
    checksum: str | None
    coverage: float | None = None


def _unavailable(path: Path, doing: str, exc: sqlite3.OperationalError) -> RunDirError:
    """The error for a sound state that cannot be opened or written now (full disk, read-only, locked)."""
    return RunDirError(
        f"cannot {doing} the state {path} ({exc}); free space on its file system, make it writable "
        "(or stop the other process holding it) and run the same command again: "
        "everything recorded so far is kept"
    )


class StateStore:
    """The state database of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(chunks)")}
            if "coverage" not in columns:  # a state written before coverage was recorded
                self._db.execute("ALTER TABLE chunks ADD COLUMN coverage REAL")
        except sqlite3.OperationalError as exc:  # a full disk, read-only folder or lock: the file is sound
            raise _unavailable(self.path, "open", exc) from None
        except sqlite3.DatabaseError as exc:
            raise RunDirError(
                f"state file {self.path} is damaged or not a state database ({exc}); "
                "move it aside to start the run's bookkeeping afresh"
            ) from None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One transaction; a full disk or a locked file becomes a clear error.

        The transaction is rolled back, so the state keeps every earlier record:
        the chunks of the lost batch are simply computed again on resume.
        """
        try:
            with self._db:
                yield
        except sqlite3.OperationalError as exc:
            raise _unavailable(self.path, "write", exc) from None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- the plan
    def add_chunks(self, chunks: Iterable[tuple[ChunkId, Sequence[str]]]) -> int:
        """Add planned chunks (with their provinces); existing ones are kept as they are."""
        rows = ((c.key, c.row, c.col, ",".join(p)) for c, p in chunks)
        with self._writing():
            self._db.execute("BEGIN")
            cur = self._db.executemany(
                "INSERT OR IGNORE INTO chunks(id, row, col, provinces) VALUES (?, ?, ?, ?)", rows
            )
        return cur.rowcount

    def set_meta(self, key: str, value: str) -> None:
        """Store a small named value (e.g. the plan's fingerprint)."""
        with self._writing():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        """Read a value stored with :meth:`set_meta`."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # ---------------------------------------------------------------- queries
    def count(self) -> dict[str, int]:
        """Number of chunks per status (every key of :data:`STATUSES` always present)."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM chunks GROUP BY status"):
            out[status] = n
        return out

    def chunk_ids(self, status: str | None = None) -> list[ChunkId]:
        """Chunk ids, optionally of one status, in (row, col) order."""
        sql = "SELECT row, col FROM chunks"
        args: tuple[str, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        return [ChunkId(r, c) for r, c in self._db.execute(sql + " ORDER BY row, col", args)]

    def records(self, province: str | None = None) -> Iterator[ChunkRecord]:
        """Every chunk's record (or those of one province, by adcode), in (row, col) order.

        A province's records are selected by SQLite, so delivering one province
        of a national run does not read the other chunks into Python.
        """
        where, args = ("WHERE ',' || provinces || ',' LIKE ?", (f"%,{province},%",)) if province else ("", ())
        for row, col, prov, status, attempts, error, checksum, coverage in self._db.execute(
            "SELECT row, col, provinces, status, attempts, error, checksum, coverage FROM chunks "
            f"{where} ORDER BY row, col", args
        ):
            yield ChunkRecord(ChunkId(row, col), tuple(p for p in prov.split(",") if p),
                              status, attempts, error, checksum, coverage)

    def provinces_of(self, chunks: Iterable[ChunkId]) -> dict[ChunkId, tuple[str, ...]]:
        """The provinces (adcodes) of given chunks (a flush's results), asked in batches of 500."""
        ids = [c.key for c in chunks]
        out: dict[ChunkId, tuple[str, ...]] = {}
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            for row, col, prov in self._db.execute(
                f"SELECT row, col, provinces FROM chunks WHERE id IN ({','.join('?' * len(batch))})", batch
            ):
                out[ChunkId(row, col)] = tuple(p for p in prov.split(",") if p)
        return out

    def status_groups(self) -> Iterator[tuple[tuple[str, ...], str, int]]:
        """``(provinces, status, chunks)`` for each group of chunks sharing both.

        Counted by SQLite: a national state (574,357 chunks) is summed without
        reading each record into Python.
        """
        for prov, status, n in self._db.execute(
            "SELECT provinces, status, COUNT(*) FROM chunks GROUP BY provinces, status"
        ):
            yield tuple(p for p in prov.split(",") if p), status, n

    def coverage_groups(self) -> Iterator[tuple[tuple[str, ...], int, float, int]]:
        """``(provinces, chunks, sum of coverage, chunks with a known coverage)`` per province group.

        Summed by SQLite, for the per-province km² with and without imagery.
        """
        for prov, n, total, known in self._db.execute(
            "SELECT provinces, COUNT(*), COALESCE(SUM(coverage), 0), COUNT(coverage) FROM chunks "
            "GROUP BY provinces"
        ):
            yield tuple(p for p in prov.split(",") if p), n, float(total), known

    def error_counts(self) -> Iterator[tuple[str, int]]:
        """``(error, chunks)`` of the failed chunks, most frequent first."""
        yield from self._db.execute(
            "SELECT error, COUNT(*) AS n FROM chunks WHERE status = 'failed' AND error IS NOT NULL "
            "GROUP BY error ORDER BY n DESC"
        )

    def recomputed(self) -> int:
        """Chunks computed more than once (``attempts`` above 1): retried, rerun or lost by a dead driver."""
        return self._db.execute("SELECT COUNT(*) FROM chunks WHERE attempts > 1").fetchone()[0]

    def positions(self) -> tuple[list[int], list[int], list[str]]:
        """Every chunk's ``row``, ``col`` and status as three lists, in (row, col) order (for maps)."""
        rows = self._db.execute("SELECT row, col, status FROM chunks ORDER BY row, col").fetchall()
        if not rows:
            return [], [], []
        r, c, st = zip(*rows, strict=True)
        return list(r), list(c), list(st)

    def throughput(self, window_s: float = 900.0) -> tuple[float, float]:
        """Recent rate of done chunks: ``(chunks per second, seconds it was measured over)``.

        Measured over the last ``window_s`` seconds of recorded work, so a resumed
        run's ETA reflects the cluster running now, not an earlier one.
        """
        last = self._db.execute("SELECT MAX(finished) FROM chunks WHERE status = 'done'").fetchone()[0]
        if last is None:
            return 0.0, 0.0
        n, first = self._db.execute(
            "SELECT COUNT(*), MIN(finished) FROM chunks WHERE status = 'done' AND finished > ?",
            (last - window_s,),
        ).fetchone()
        span = max(last - first, 1.0) if n > 1 else 0.0
        return (n - 1) / span if span else 0.0, span

    def finished(self) -> dict[ChunkId, float]:
        """Done chunks and when each finished (to compare the stages' records)."""
        return {ChunkId(r, c): t or 0.0 for r, c, t in self._db.execute(
            "SELECT row, col, finished FROM chunks WHERE status = 'done'")}

    def done_checksums(self) -> Iterator[tuple[ChunkId, str | None]]:
        """``(chunk, recorded checksum)`` of every done chunk, in (row, col) order (to verify outputs).

        Read by SQLite alone, so a national state is listed in seconds.
        """
        for r, c, checksum in self._db.execute(
            "SELECT row, col, checksum FROM chunks WHERE status = 'done' ORDER BY row, col"
        ):
            yield ChunkId(r, c), checksum

    def last_finished(self) -> dict[str, float]:
        """Per province, the time its latest chunk finished (to know if a mosaic is stale)."""
        out: dict[str, float] = {}
        for prov, finished in self._db.execute(
            "SELECT provinces, MAX(finished) FROM chunks WHERE status = 'done' GROUP BY provinces"
        ):
            for code in filter(None, prov.split(",")):
                out[code] = max(out.get(code, 0.0), finished or 0.0)
        return out

    # ---------------------------------------------------------------- updates
    def record(self, results: Sequence[ChunkResult]) -> None:
        """Record a batch of results in one transaction (all or nothing)."""
        now = time.time()
        with self._writing():
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE chunks SET status = ?, attempts = attempts + ?, worker = ?, started = ?, "
                "finished = ?, seconds = ?, error = ?, checksum = ? WHERE id = ?",
                [
                    (DONE if r.ok else FAILED, r.attempts, r.worker, r.started, now, r.seconds,
                     r.error or None, r.checksum or None, r.chunk.key)
                    for r in results
                ],
            )

    def reset(self, chunks: Iterable[ChunkId]) -> None:
        """Mark chunks pending again (for a rerun), keeping their attempt counts."""
        with self._writing():
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE chunks SET status = 'pending', error = NULL WHERE id = ?",
                [(c.key,) for c in chunks],
            )

    def add_attempts(self, chunks: Iterable[ChunkId]) -> None:
        """Count one attempt more for chunks a driver computed but died before recording."""
        with self._writing():
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE chunks SET attempts = attempts + 1 WHERE id = ?",
                                 [(c.key,) for c in chunks])

    def set_coverage(self, shares: Iterable[tuple[ChunkId, float]]) -> None:
        """Record each chunk's share (0–1) of pixels that the imagery covers, from footprints."""
        with self._writing():
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE chunks SET coverage = ? WHERE id = ?",
                                 [(float(share), c.key) for c, share in shares])

    def mark_no_imagery(self, chunks: Iterable[ChunkId]) -> None:
        """Record chunks that no imagery touches as :data:`NO_IMAGERY` (never dispatched)."""
        with self._writing():
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE chunks SET status = ?, coverage = 0, error = NULL WHERE id = ?",
                [(NO_IMAGERY, c.key) for c in chunks],
            )


class StateReader:
    """Read-only queries of a state file that a running driver may be writing (maps, the live page).

    Opened with SQLite's ``mode=ro``: it never takes the driver's write lock nor
    creates anything; the schema stays this module's alone.  A file that cannot
    be read is a :class:`RunDirError` naming it.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path).absolute()
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=timeout)
            self._db.execute("SELECT 1 FROM chunks LIMIT 1")
        except sqlite3.Error as exc:
            raise RunDirError(f"cannot read the state {self.path} ({exc}): give the --run-dir of a planned "
                              "run (`sinolc-dist plan` or `sinolc-dist run`)") from None

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._db.close()

    def lattice_rows(self, codes: dict[str, int]) -> list[tuple[int, int, int, int, float]]:
        """``(row, col, code, attempts, seconds)`` of every planned chunk, its status as ``codes`` numbers it.

        SQLite translates the statuses (0 for one not in ``codes``), so a national state reads in seconds.
        """
        case = " ".join(f"WHEN ? THEN {int(c)}" for c in codes.values())
        sql = f"SELECT row, col, CASE status {case} ELSE 0 END, attempts, COALESCE(seconds, 0) FROM chunks"
        return self._db.execute(sql, tuple(codes)).fetchall()

    def province_cells(self, row0: int, col0: int, width: int) -> Iterator[tuple[tuple[str, ...], list[int]]]:
        """Each distinct set of provinces with the flat cells of its chunks.

        A chunk's cell is ``(row - row0) * width + col - col0``, its place in a lattice ``width`` wide.
        """
        for provinces, cells in self._db.execute(
                "SELECT provinces, group_concat((row - ?) * ? + (col - ?)) FROM chunks GROUP BY provinces",
                (row0, width, col0)):
            yield tuple(filter(None, provinces.split(","))), [int(c) for c in cells.split(",")]

    def detail(self, chunk: ChunkId) -> tuple[str | None, str | None]:
        """``(worker, error)`` recorded for a chunk (``(None, None)`` for one not planned)."""
        row = self._db.execute("SELECT worker, error FROM chunks WHERE id = ?", (chunk.key,)).fetchone()
        return (row[0], row[1]) if row else (None, None)
