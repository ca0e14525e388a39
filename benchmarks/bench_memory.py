"""Peak memory of one shard's inference: it grows with the chunk size, not the raster's.

For each (raster side, chunk side) pair a child process creates input and output
stores over a raster of that side (only the first shard holds imagery), runs the
engine on that one shard and reports its peak resident memory.  The raster sides
span 64× in area at a fixed chunk; the chunk sides change at a fixed raster.

    python benchmarks/bench_memory.py [--rasters 4096,16384,65536] [--chunks 256,512,1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from results_file import save

CHILD = r"""
import json, resource, sys, tempfile
from pathlib import Path
import numpy as np, torch
from sinolc_dist.rundir import stores
from sinolc_dist.engine.inference import ModelRef, ShardTask, run_shard
from sinolc_dist.grid import CHINA_ALBERS, ChunkId, Grid, ShardId
from sinolc_dist.models.checkpoint import ModelSpec, save_checkpoint
from sinolc_dist.models.l2hnet import L2HNet

raster, chunk, width = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    torch.manual_seed(0)
    save_checkpoint(tmp / "m.pt", L2HNet(width=width), ModelSpec(width=width))
    grid = Grid(crs=CHINA_ALBERS, origin=(1e6, 3.4e6), size=(raster, raster), chunk=chunk,
                block=min(256, chunk), shard=2, halo=16)
    src = stores.create_store(tmp / "in.zarr", grid, "input")
    shard = grid.shard_window(ChunkId(0, 0))
    rng = np.random.default_rng(0)
    for cid in grid.chunks_in(shard):
        w = grid.chunk_window(cid)
        stores.write_window(src, w, rng.integers(1, 255, (3, w.height, w.width), dtype=np.uint8))
    stores.create_store(tmp / "out.zarr", grid, "output")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    task = ShardTask(grid, ShardId(0, 0), tuple(grid.chunks_in(shard)), str(tmp / "in.zarr"),
                     str(tmp / "out.zarr"), ModelRef(str(tmp / "m.pt"), patch=min(512, chunk), device="cpu"))
    assert all(r.ok for r in run_shard(task))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"raster": raster, "chunk": chunk, "peak_rss_mib": peak / 1024,
                  "setup_rss_mib": base / 1024}))
"""


def measure(raster: int, chunk: int, width: int) -> dict:
    """Peak memory of a child process running one shard (raster side, chunk side)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(raster), str(chunk), str(width)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the grid of cases and write ``benchmarks/results/memory.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rasters", default="4096,16384,65536")
    ap.add_argument("--chunks", default="256,512,1024")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rasters = [int(v) for v in args.rasters.split(",")]
    chunks = [int(v) for v in args.chunks.split(",")]
    rows = []
    for raster in rasters:  # fixed chunk, growing raster
        rows.append(measure(raster, chunks[1] if len(chunks) > 1 else chunks[0], args.width))
        print(json.dumps(rows[-1]), flush=True)
    for chunk in chunks:  # fixed raster, growing chunk
        rows.append(measure(rasters[0], chunk, args.width))
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "memory", "width": args.width, "rows": rows}
    save(result, args.out, "memory.json")


if __name__ == "__main__":
    main()
