"""Dispatch at national scale: the full CN plan's chunks through a LocalCluster, no-op model.

Plans ``--region`` (default CN, ~574,000 chunks at 4096 px) into a temporary run
directory, then dispatches every chunk with the real driver (bounded in flight, one task
per shard, batched SQLite state updates) to a LocalCluster whose workers run a no-op
instead of the model.  Records chunks/s dispatched and recorded, the driver's peak
memory and the state's size.  Targets: >= 1,000 chunks/s, driver under 2 GiB.
Then times ``sinolc-dist verify --all`` on that national state (every done chunk's
shard listed and sent in batches to the same cluster, where a no-op stands in for reading
the shard: what the driver and the dispatch cost, not the reads), plus what one worker
takes to read and check one real shard of the workflow's size (blocky random classes),
and what a user's ``sinolc-dist status`` and ``status --map`` cost (every planned chunk,
done or pending).

    python benchmarks/bench_dispatch.py [--region CN] [--shard 2] [--max-chunks N]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster
from results_file import save

from sinolc_dist.deliver.maps import status_map
from sinolc_dist.engine.inference import ModelRef, ShardTask, shard_tasks
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.regions.plan import make_plan, record_plan
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.integrity import ShardJob, ShardVerdict, check_done, check_shards, checksum
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, PENDING, ChunkResult, StateStore
from sinolc_dist.stages.dispatch import dispatch
from sinolc_dist.stages.status import status
from sinolc_dist.stages.verify import cluster_runner
from sinolc_dist.stages.workflow import load_workflow


def no_op(task: ShardTask) -> list[ChunkResult]:
    """What a worker returns for a shard when the model does nothing."""
    now = time.time()
    return [ChunkResult(c, True, "bench", now, 0.0, "0" * 16) for c in task.chunks]


def no_op_check(grid: Grid, store_path: str, jobs: list[ShardJob]) -> list[ShardVerdict]:
    """What a worker returns for a batch of sound shards, without reading them."""
    return []


def touch_shards(rundir: RunDir, grid: Grid, state: StateStore) -> int:
    """An empty file for every done chunk's shard, so that ``verify`` finds each one present."""
    shards = {grid.shard_of(c) for c in state.chunk_ids(DONE)}
    root = rundir.output / stores.OUTPUT_ARRAY / "c"
    for row in {s.row for s in shards}:
        (root / str(row)).mkdir(parents=True, exist_ok=True)
    for s in shards:
        (root / str(s.row) / str(s.col)).touch()
    return len(shards)


def shard_read_seconds(grid: Grid, folder: Path) -> float:
    """Seconds :func:`check_shards` takes to read and check one whole shard of ``grid`` (64 px blocks)."""
    side = grid.shard_px
    one = dataclasses.replace(grid, size=(side, side))
    arr = stores.create_store(folder / "one-shard.zarr", one, "output")
    blocks = np.random.default_rng(0).integers(1, 12, (side // 64, side // 64), dtype=np.uint8)
    classes = blocks.repeat(64, 0).repeat(64, 1)
    stores.write_window(arr, one.full_window, classes)
    chunks = tuple((c, checksum(classes[one.chunk_window(c).slices()]))
                   for c in one.chunks_in(one.full_window))
    t0 = time.perf_counter()
    bad = check_shards(one, str(folder / "one-shard.zarr"), [(ChunkId(0, 0), chunks)])
    seconds = time.perf_counter() - t0
    assert not bad, bad
    return seconds


def main() -> None:
    """Plan, dispatch every chunk, write ``benchmarks/results/dispatch-<region>.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--region", default="CN")
    ap.add_argument("--workflow", default="cn")
    ap.add_argument("--shard", type=int, default=None, help="chunks per shard side (default: workflow's)")
    ap.add_argument("--max-in-flight", type=int, default=64)
    ap.add_argument("--max-chunks", type=int, default=0, help="stop after this many chunks (0 = all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    grid = load_workflow(args.workflow).grid
    if args.shard:
        grid = dataclasses.replace(grid, shard=args.shard)
    with tempfile.TemporaryDirectory() as tmp:
        rundir = RunDir(Path(tmp)).create()
        t0 = time.perf_counter()
        record_plan(make_plan(args.region, grid), rundir)
        plan_s = time.perf_counter() - t0
        ref = ModelRef("no-op")
        with StateStore(rundir.state) as state, \
                LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                             dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            todo = state.chunk_ids(PENDING)
            if args.max_chunks:
                todo = todo[:args.max_chunks]
            t0 = time.perf_counter()
            report = dispatch(client, state, shard_tasks(grid, todo, "-", "-", ref), retries=0,
                              max_in_flight=args.max_in_flight, work=no_op)
            seconds = time.perf_counter() - t0
            done = state.count()
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before verify's reads
            shards = touch_shards(rundir, grid, state)
            t0 = time.perf_counter()
            runner = cluster_runner(client, grid, rundir.output, no_op_check)
            checked = check_done(state, grid, rundir.output, lambda: nullcontext(runner))
            verify_s = time.perf_counter() - t0
            verify_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        state_mb = rundir.state.stat().st_size / 1e6
        read_s = shard_read_seconds(grid, Path(tmp))
        rundir.freeze(RunConfig(grid, region=args.region), frozenset())
        t0 = time.perf_counter()
        status(rundir.root)
        status_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        status_map(rundir.root, Path(tmp) / "status.png")
        status_map_s = time.perf_counter() - t0
    result = {
        "benchmark": "dispatch", "region": args.region, "grid_chunk": grid.chunk, "shard": grid.shard,
        "chunks_per_task": grid.shard**2, "chunks": len(todo), "recorded_done": done["done"],
        "failed": report.failed, "plan_seconds": plan_s, "dispatch_seconds": seconds,
        "chunks_per_s": len(todo) / seconds, "driver_peak_rss_mib": peak_mib, "state_mb": state_mb,
        "max_in_flight": args.max_in_flight, "targets": {"chunks_per_s": 1000, "driver_peak_rss_mib": 2048},
        "status_seconds": status_s, "status_map_seconds": status_map_s,
        "verify_all_seconds": verify_s, "verify_checked_chunks": checked.checked_chunks,
        "verify_checked_shards": checked.checked_shards, "verify_bad_chunks": len(checked.bad),
        "verify_driver_peak_rss_mib": verify_peak_mib, "verify_read_seconds_per_shard": read_s,
        "verify_read_worker_hours": shards * read_s / 3600,
    }
    print(f"dispatched {len(todo):,} chunks ({grid.shard**2} per task) in {seconds:.1f} s: "
          f"{result['chunks_per_s']:,.0f} chunks/s; driver peak {peak_mib:,.0f} MiB; "
          f"state {state_mb:.1f} MB; recorded done {done['done']:,}; status {status_s:.1f} s, "
          f"status --map {status_map_s:.1f} s; verify --all {verify_s:.1f} s "
          f"({checked.checked_chunks:,} chunks in {shards:,} shards, no-op reads; driver peak "
          f"{verify_peak_mib:,.0f} MiB); reading one {grid.shard_px:,}² px shard {read_s:.2f} s, so "
          f"{shards * read_s / 3600:,.1f} worker-hours of reads")
    save(result, args.out, f"dispatch-{args.region.lower()}.json")


if __name__ == "__main__":
    main()
