"""Check the state against the output store before a resume trusts it.

The state says which chunks are done; the output store holds what they
produced.  They can disagree: a store deleted or restored from an older copy,
a state copied from another run, shards lost on a scratch file system.  A
resume therefore checks that every done chunk's shard exists, and recomputes
the recorded checksum of a random sample of done chunks; if any sample chunk
disagrees, every done chunk is checked.  Chunks that fail are set pending.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import zarr

from sinolc_dist import stores
from sinolc_dist.engine import checksum
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.state import DONE, StateStore


def present_shards(store_path: Path) -> set[ChunkId]:
    """Shard ids (row, col) whose files exist in an output store (local file system)."""
    root = Path(store_path) / stores.OUTPUT_ARRAY / "c"
    found: set[ChunkId] = set()
    if not root.is_dir():
        return found
    with os.scandir(root) as rows:
        for row in rows:
            if not (row.is_dir() and row.name.isdigit()):
                continue
            with os.scandir(row.path) as cols:
                found.update(ChunkId(int(row.name), int(c.name)) for c in cols
                             if c.is_file() and c.name.isdigit())
    return found


def _mismatched(records: list, grid: Grid, arr: zarr.Array) -> list[ChunkId]:
    bad = []
    for rec in records:
        data = stores.read_window(arr, grid.chunk_window(rec.chunk))
        if rec.checksum and checksum(data) != rec.checksum:
            bad.append(rec.chunk)
    return bad


def stale_chunks(state: StateStore, grid: Grid, store_path: Path, sample: int = 32,
                 seed: int | None = None) -> list[ChunkId]:
    """Done chunks whose output is missing or differs from their recorded checksum."""
    done = [r for r in state.records() if r.status == DONE]
    if not done:
        return []
    shards = present_shards(store_path)
    missing = {r.chunk for r in done if grid.shard_of(r.chunk) not in shards}
    rest = [r for r in done if r.chunk not in missing]
    arr = stores.open_array(store_path, grid)
    picked = random.Random(seed).sample(rest, min(sample, len(rest)))
    bad = _mismatched(picked, grid, arr)
    if bad:  # the sample found damage: check everything
        bad = _mismatched(rest, grid, arr)
    return sorted(missing | set(bad))
