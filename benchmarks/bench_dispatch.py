"""Dispatch at national scale: the full CN plan's chunks through a LocalCluster, no-op model.

Plans ``--region`` (default CN, ~574,000 chunks at 4096 px) into a temporary run
directory, then dispatches every chunk with the real driver (bounded in flight, one task
per shard, batched SQLite state updates) to a LocalCluster whose workers run a no-op
instead of the model.  Records chunks/s dispatched and recorded, the driver's peak
memory and the state's size.  Targets: >= 1,000 chunks/s, driver under 2 GiB.
Then times what a user's ``sinolc-dist status`` and ``status --map`` cost on that
national state (every planned chunk, done or pending).

    python benchmarks/bench_dispatch.py [--region CN] [--shard 2] [--max-chunks N]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster
from results_file import save

from sinolc_dist.config import load_workflow
from sinolc_dist.driver import dispatch, shard_tasks
from sinolc_dist.engine import ModelRef, ShardTask
from sinolc_dist.maps import status_map
from sinolc_dist.pipeline import status
from sinolc_dist.plan import make_plan, record_plan
from sinolc_dist.rundir import RunDir
from sinolc_dist.state import PENDING, ChunkResult, StateStore


def no_op(task: ShardTask) -> list[ChunkResult]:
    """What a worker returns for a shard when the model does nothing."""
    now = time.time()
    return [ChunkResult(c, True, "bench", now, 0.0, "0" * 16) for c in task.chunks]


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
        state_mb = rundir.state.stat().st_size / 1e6
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before status's reads
        rundir.freeze({"grid": grid.to_dict(), "region": args.region}, frozenset())
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
    }
    print(f"dispatched {len(todo):,} chunks ({grid.shard**2} per task) in {seconds:.1f} s: "
          f"{result['chunks_per_s']:,.0f} chunks/s; driver peak {peak_mib:,.0f} MiB; "
          f"state {state_mb:.1f} MB; recorded done {done['done']:,}; status {status_s:.1f} s, "
          f"status --map {status_map_s:.1f} s")
    save(result, args.out, f"dispatch-{args.region.lower()}.json")


if __name__ == "__main__":
    main()
