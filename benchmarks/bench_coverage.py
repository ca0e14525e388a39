"""Coverage before dispatch at national scale: chunk shares of every chunk of the cn grid.

Builds an index of N synthetic scene footprints (each a few km, scattered over
the grid, overlapping where they fall together) and times
:func:`sinolc_dist.stages.coverage.chunk_shares` over all chunks of the ``cn`` workflow's
grid (what ``run`` and ``ingest`` compute on every start), and the overlap check.

    python benchmarks/bench_coverage.py [--files 20000] [--workflow cn]
"""

from __future__ import annotations

import argparse
import random
import time

from results_file import save

from sinolc_dist.grid import ChunkId
from sinolc_dist.imagery.sources import CompositeOptions, ImageryIndex, Source
from sinolc_dist.regions.region import resolve_region
from sinolc_dist.stages.coverage import chunk_shares, require_overlap
from sinolc_dist.stages.workflow import load_workflow


def main() -> None:
    """Time the shares of every chunk and write ``benchmarks/results/coverage-<files>.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--workflow", default="cn")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    grid = load_workflow(args.workflow).grid
    rows, cols = grid.chunks_shape
    rng = random.Random(0)
    sources = []
    for i in range(args.files):  # a scene ~1.5 chunks wide, off the chunk lattice
        left, bottom, right, top = grid.chunk_bounds(ChunkId(rng.randrange(rows), rng.randrange(cols)))
        bounds = (left + 100, bottom - 3000, right + 2000, top - 50)
        sources.append(Source(f"/scenes/{i}.tif", "gdal", "EPSG:32650", bounds, "uint8", (1, 2, 3), None, i))
    index = ImageryIndex(grid, CompositeOptions(), tuple(sources))
    chunks = [ChunkId(r, c) for r in range(rows) for c in range(cols)]
    t0 = time.perf_counter()
    shares = chunk_shares(grid, chunks, index)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    require_overlap(index, resolve_region("CN"), grid)
    overlap_s = time.perf_counter() - t0
    touched = sum(s > 0 for s in shares.values())
    print(f"{len(chunks):,} chunks x {args.files:,} footprints: shares in {seconds:.1f} s "
          f"({touched:,} chunks touched); overlap check {overlap_s:.2f} s")
    save({"workflow": args.workflow, "chunks": len(chunks), "files": args.files, "touched": touched,
          "shares_seconds": round(seconds, 2), "overlap_seconds": round(overlap_s, 2)},
         args.out, f"coverage-{args.files}.json")


if __name__ == "__main__":
    main()
