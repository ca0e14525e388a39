"""Check the state against a store: done chunks whose output is lost, changed or unreadable.

The state says which chunks are done; the output store holds what they
produced.  They can disagree: a store deleted or restored from an older copy,
a state copied from another run, shards lost on a scratch file system, a
flipped byte in a shard (a Blosc/zstd or shard-index checksum error when it is
read, or silently different classes).  A shard is checked by reading it whole
and comparing each done chunk's classes with the :func:`checksum` recorded when
it was written; a shard that cannot be read counts as bad for every done chunk in it.

Two callers: a resume (:func:`stale_chunks`) checks every shard's presence and
a random sample of done chunks, widening to every shard when the sample finds
damage; ``sinolc-dist verify`` (:mod:`sinolc_dist.stages.verify`) checks every
done chunk (or a sample) on the run's cluster, through a :data:`Runner` that
runs :func:`check_shards` there.  Bad chunks go back to pending; an unreadable
shard file is first moved aside into ``output.zarr.quarantine/<time>/`` (kept,
never deleted), so that recomputing it starts from an empty shard instead of
failing to read the damaged one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from sinolc_dist.grid import ChunkId, Grid, ShardId, Window
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.state import StateStore

log = logging.getLogger("sinolc_dist")
#: Shards one verification task reads, one after the other (a `cn` shard is 256 MiB decoded).
BATCH_SHARDS = 32
#: The reason of a shard recorded done whose file is not in the store.
MISSING = "shard file missing"

#: A shard to check: its id and its done chunks with their recorded checksums.
ShardJob = tuple[ShardId, tuple[tuple[ChunkId, str | None], ...]]


@dataclass(frozen=True)
class ShardVerdict:
    """A shard whose done chunks are bad: which ones, and why."""

    shard: ShardId
    chunks: tuple[ChunkId, ...]
    reason: str
    #: The arrays (``classes``, ``confidence``) whose shard file cannot be decoded: moved aside
    #: before the chunks are recomputed (a partly planned shard is read back when rewritten).
    unreadable: tuple[str, ...] = ()


@dataclass
class VerifyReport:
    """What a verification checked and found."""

    done: int = 0
    checked_chunks: int = 0
    checked_shards: int = 0
    #: The sample found damage, so every shard was checked.
    widened: bool = False
    verdicts: list[ShardVerdict] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)

    @property
    def bad(self) -> list[ChunkId]:
        """Every bad chunk, in (row, col) order."""
        return sorted(c for v in self.verdicts for c in v.chunks)


#: Checks batches of shard jobs, yielding each batch with its verdicts as it is done.
Runner = Callable[[list[list[ShardJob]]], Iterator[tuple[list[ShardJob], list[ShardVerdict]]]]
#: What a shard check is: :func:`check_shards`, or the dispatch benchmark's no-op.
Check = Callable[[Grid, str, list[ShardJob]], list[ShardVerdict]]




def checksum(data: np.ndarray) -> str:
    """A short content hash of a chunk's pixels (classes or input bands), kept in the state."""
    return hashlib.blake2b(np.ascontiguousarray(data).tobytes(), digest_size=8).hexdigest()


def present_shards(store_path: Path) -> set[ShardId]:
    """Shard ids (row, col) whose files exist in an output store (local file system)."""
    root = Path(store_path) / stores.OUTPUT_ARRAY / "c"
    found: set[ShardId] = set()
    if not root.is_dir():
        return found
    with os.scandir(root) as rows:
        for row in rows:
            if not (row.is_dir() and row.name.isdigit()):
                continue
            with os.scandir(row.path) as cols:
                found.update(ShardId(int(row.name), int(c.name)) for c in cols
                             if c.is_file() and c.name.isdigit())
    return found


def _read_shard(arr: zarr.Array, win: Window) -> tuple[np.ndarray | None, str]:
    """A shard's pixels, or ``None`` and why it cannot be decoded."""
    try:
        return stores.read_window(arr, win), ""
    except MemoryError:  # the worker's trouble, not the file's
        raise
    except Exception as exc:  # whatever a damaged file raises, the shard is bad, never a traceback
        return None, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def check_shards(grid: Grid, store_path: str, jobs: list[ShardJob]) -> list[ShardVerdict]:
    """Read each shard whole and compare its done chunks' classes with their checksums (on a worker).

    Any error while decoding a shard (Blosc/zstd, a shard index checksum, a
    truncated file) makes it unreadable: every done chunk in it is bad.  The
    ``confidence`` array, where the run writes one, has no checksum but must
    decode too.
    """
    arrays = {stores.OUTPUT_ARRAY: stores.open_array(store_path, grid)}
    conf = stores.confidence_array(store_path, grid)
    if conf is not None:
        arrays[stores.CONFIDENCE_ARRAY] = conf
    verdicts = []
    for shard, chunks in jobs:
        win = grid.shard_window(shard)
        read = {name: _read_shard(arr, win) for name, arr in arrays.items()}
        broken = {name: why for name, (_, why) in read.items() if why}
        if broken:
            reason = "; ".join(f"{name} {why}" for name, why in broken.items())
            verdicts.append(ShardVerdict(shard, tuple(c for c, _ in chunks), f"unreadable ({reason})",
                                         tuple(broken)))
            continue
        data = read[stores.OUTPUT_ARRAY][0]
        bad = tuple(c for c, recorded in chunks
                    if recorded and checksum(data[grid.chunk_window(c).within(win)]) != recorded)
        if bad:
            verdicts.append(ShardVerdict(shard, bad, "classes differ from their recorded checksum"))
    return verdicts


def local_runner(grid: Grid, store_path: Path) -> Runner:
    """Check batches here, one after the other (a resume's sample)."""
    return lambda batches: ((b, check_shards(grid, str(store_path), b)) for b in batches)


def quarantine(store_path: Path, shard: ShardId, stamp: str, array: str = stores.OUTPUT_ARRAY) -> Path | None:
    """Move an array's unreadable shard file aside, beside the store and never deleted; its new path."""
    tail = Path(array, "c", str(shard.row), str(shard.col))
    src = Path(store_path) / tail
    if not src.is_file():
        return None
    dst = Path(f"{store_path}.quarantine") / stamp / tail
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dst)
    log.warning("unreadable shard %s moved aside to %s", src, dst)
    return dst


def _batches(jobs: list[ShardJob], size: int) -> list[list[ShardJob]]:
    """Shard jobs cut into batches of ``size``, one verification task each."""
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


Record = Callable[[list[ShardJob], list[ShardVerdict]], bool]


def _recorder(report: VerifyReport, store_path: Path, on_bad: Callable[[list[ShardVerdict]], None]) -> Record:
    """What to do with each checked batch: count it, move its unreadable files aside, pass on its bad shards.

    The recorder returns whether the batch had bad shards.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

    def record(batch: list[ShardJob], verdicts: list[ShardVerdict]) -> bool:
        report.checked_shards += len(batch)
        report.checked_chunks += sum(len(chunks) for _, chunks in batch)
        for v in verdicts:
            moved = [quarantine(store_path, v.shard, stamp, array) for array in v.unreadable]
            report.quarantined.extend(p for p in moved if p)
        report.verdicts.extend(verdicts)
        if verdicts:
            on_bad(verdicts)
        return bool(verdicts)
    return record


def check_done(
    state: StateStore, grid: Grid, store_path: Path,
    open_runner: Callable[[], AbstractContextManager[Runner]],
    sample: int | None = None, seed: int | None = None,
    on_bad: Callable[[list[ShardVerdict]], None] = lambda verdicts: None,
    sample_runner: Runner | None = None, batch_shards: int = BATCH_SHARDS,
) -> VerifyReport:
    """Check the shards of the done chunks: all of them, or a random ``sample`` of chunks' shards.

    A shard recorded done but absent from the store is bad without being read.
    When the sample finds damage, every shard is checked.  ``open_runner`` is
    entered the first time shards are read (``sample_runner`` reads the sample
    instead when given); unreadable shard files are moved aside (see
    :func:`quarantine`) before ``on_bad`` receives each batch's bad shards, so
    a long verification keeps what it found if it is stopped.
    """
    done: dict[ShardId, dict[ChunkId, str | None]] = {}
    for chunk, recorded in state.done_checksums():
        done.setdefault(grid.shard_of(chunk), {})[chunk] = recorded
    report = VerifyReport(done=sum(len(c) for c in done.values()))
    present = present_shards(store_path) if done else set()
    jobs = {s: tuple(c.items()) for s, c in sorted(done.items()) if s in present}
    record = _recorder(report, store_path, on_bad)
    missing = [s for s in sorted(done) if s not in present]
    record([(s, tuple(done[s].items())) for s in missing],
           [ShardVerdict(s, tuple(done[s]), MISSING) for s in missing])
    first = list(jobs)
    if sample is not None:
        chunks = sorted(c for s in jobs for c in done[s])
        picked = random.Random(seed).sample(chunks, min(sample, len(chunks)))
        first = sorted({grid.shard_of(c) for c in picked})
    with ExitStack() as stack:
        opened: list[Runner] = []

        def read(shards: list[ShardId], runner: Runner | None = None) -> bool:
            """Check these shards (the shared runner opened on first use); whether any was bad."""
            if not shards:
                return False
            if runner is None:
                if not opened:
                    opened.append(stack.enter_context(open_runner()))
                runner = opened[0]
            found = False
            for batch, verdicts in runner(_batches([(s, jobs[s]) for s in shards], batch_shards)):
                found = record(batch, verdicts) or found
            return found

        if read(first, sample_runner) and sample is not None:  # the sample found damage: check everything
            report.widened = True
            read(sorted(set(jobs) - set(first)))
    return report


def stale_chunks(state: StateStore, grid: Grid, store_path: Path, sample: int = 32, seed: int | None = None,
                 widen: Callable[[], AbstractContextManager[Runner]] | None = None) -> list[ChunkId]:
    """Done chunks whose output is missing, unreadable or differs from its checksum (a resume's check).

    Cheap on a sound store: every shard's presence and ``sample`` chunks' shards,
    read here.  When the sample finds damage every shard is read by the runner
    ``widen`` opens (a cluster's, see :func:`sinolc_dist.stages.verify.on_cluster`;
    else here).  Unreadable shard files are moved aside; the caller sets the chunks pending.
    """
    local = local_runner(grid, store_path)
    return check_done(state, grid, store_path, widen or (lambda: nullcontext(local)), sample, seed,
                      sample_runner=local).bad
