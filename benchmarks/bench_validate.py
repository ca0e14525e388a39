"""``validate --points`` and ``validate --against`` at national scale: time and peak memory.

Builds a national-size sparse run directory: the default China Albers grid at
1 m (5.7 M x 5.0 M px), a ``state.sqlite`` of ``--planned`` chunks (a square
of them in the middle of the grid, the national plan's 574,357 by default) of
which the chunks of ``--shards`` written shards (8192² px of land-cover-like
classes each, side by side) are done and the rest pending, and the Zarr output
store with only those shards written.  Then, each in a child process whose peak
resident memory is read from the kernel (``wait4``):

(a) ``--points``: ``validate_points`` and its files over ``--points`` points
    (CSV, x/y in the grid CRS), ``--hit`` of them inside the done shards and the
    rest spread over the planned square (counted and listed as "chunk not done");
(b) ``--against``: ``validate_against`` (default ``mode``: our map resampled onto
    theirs) and its files over a ``--map-size``² uint8 GeoTIFF at ``--map-res`` m
    in UTM 50N (EPSG:32650) centred on the done shards.

    python benchmarks/bench_validate.py                          # the full case (long)
    python benchmarks/bench_validate.py --points 20000 --map-size 2000 --shards 1 --planned 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from bench_mosaic import child, synthetic_classes
from pyproj import Transformer
from results_file import save

from sinolc_dist.grid import ChunkId, Grid, ShardId
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import ChunkResult, StateStore
from sinolc_dist.rundir.stores import create_store, write_window

HUBEI = "420000"


def build_run(root: Path, planned: int, shards: int) -> dict:
    """The sparse national run directory; returns the done shards' pixel window (row0, col0, row1, col1)."""
    grid = Grid()
    rundir = RunDir(root).create()
    rundir.freeze(RunConfig(grid=grid, region="CN"), frozenset())
    rows, cols = grid.chunks_shape
    side = int(np.ceil(np.sqrt(planned)))
    r0, c0 = (rows - side) // 2 // grid.shard * grid.shard, (cols - side) // 2 // grid.shard * grid.shard
    chunks = [ChunkId(r0 + i // side, c0 + i % side) for i in range(planned)]
    per_row = max(1, int(np.ceil(np.sqrt(shards))))
    sids = [ShardId(r0 // grid.shard + i // per_row, c0 // grid.shard + i % per_row) for i in range(shards)]
    arr = create_store(rundir.output, grid, "output")
    rng = np.random.default_rng(1)
    done = []
    for sid in sids:
        win = grid.shard_window(sid)
        write_window(arr, win, synthetic_classes(win.height, win.width, rng))
        done += list(grid.chunks_in(win))
    with StateStore(rundir.state) as state:
        state.add_chunks((c, (HUBEI,)) for c in sorted(set(chunks) | set(done)))
        state.record([ChunkResult(c, ok=True) for c in done])
    wins = [grid.shard_window(s) for s in sids]
    box = (min(w.row0 for w in wins), min(w.col0 for w in wins), max(w.row1 for w in wins),
           max(w.col1 for w in wins))
    plan = (r0 * grid.chunk, c0 * grid.chunk, (r0 + side) * grid.chunk, (c0 + side) * grid.chunk)
    return {"grid": grid, "done_box": box, "plan_box": plan, "done_chunks": len(done), "planned": len(chunks)}


def write_points(path: Path, grid: Grid, n: int, hit: float, done_box: tuple, plan_box: tuple) -> None:
    """``n`` points as x/y CSV with random SinoLC codes as labels."""
    rng = np.random.default_rng(2)
    k = int(n * hit)
    rows = np.concatenate([rng.uniform(done_box[0], done_box[2], k),
                           rng.uniform(plan_box[0], plan_box[2], n - k)])
    cols = np.concatenate([rng.uniform(done_box[1], done_box[3], k),
                           rng.uniform(plan_box[1], plan_box[3], n - k)])
    x, y = grid.transform @ (cols, rows)
    labels = rng.integers(1, 12, n)
    with path.open("w") as f:
        f.write("x,y,class\n")
        for chunk in range(0, n, 100_000):
            part = slice(chunk, chunk + 100_000)
            f.writelines(f"{a:.2f},{b:.2f},{c}\n"
                         for a, b, c in zip(x[part], y[part], labels[part], strict=True))


def write_map(path: Path, grid: Grid, size: int, res: float, done_box: tuple) -> None:
    """A ``size``² uint8 class raster in UTM 50N centred on the done shards, written in strips."""
    cx, cy = grid.transform @ ((done_box[1] + done_box[3]) / 2, (done_box[0] + done_box[2]) / 2)
    ux, uy = Transformer.from_crs(grid.crs, "EPSG:32650", always_xy=True).transform(cx, cy)
    transform = rasterio.transform.from_origin(ux - size * res / 2, uy + size * res / 2, res, res)
    rng = np.random.default_rng(3)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                       crs="EPSG:32650", transform=transform, nodata=0, tiled=True, compress="deflate",
                       BIGTIFF="IF_SAFER") as dst:
        for r in range(0, size, 1024):
            h = min(1024, size - r)
            dst.write(synthetic_classes(h, size, rng)[None], window=rasterio.windows.Window(0, r, size, h))


def run_child(kind: str, run_dir: Path, path: Path) -> None:
    """In the child: one validation and its files; prints a one-line summary."""
    from sinolc_dist.validate.against import validate_against, write_against_results
    from sinolc_dist.validate.points import validate_points, write_points_results

    rundir = RunDir(run_dir)
    legend = rundir.read_config().legend
    start = time.perf_counter()
    if kind == "points":
        res = validate_points(rundir, path, crs="china-albers")
        write_points_results(run_dir / "validation" / "points", res, legend)
        print(f"{time.perf_counter() - start:.3f} used={res.counts()['used']} excluded={len(res.excluded)}")
    else:
        res_a = validate_against(rundir, path, run_dir / "validation" / "against")
        write_against_results(run_dir / "validation" / "against", res_a, legend)
        print(f"{time.perf_counter() - start:.3f} compared={int(res_a.scopes['national'].n)}")


def build(work: Path, args: argparse.Namespace) -> None:
    """In a child: the run directory, the points and the other map; their summary to ``build.json``."""
    run = build_run(work / "run", args.planned, args.shards)
    grid, done_box = run.pop("grid"), run["done_box"]
    write_points(work / "points.csv", grid, args.points, args.hit, done_box, run["plan_box"])
    write_map(work / "map.tif", grid, args.map_size, args.map_res, done_box)
    (work / "build.json").write_text(json.dumps(run))


def main() -> None:
    """Build the run, time both validations, write ``benchmarks/results/validate[-small].json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000, help="reference points (default 1,000,000)")
    ap.add_argument("--hit", type=float, default=0.5, help="share of the points inside done shards")
    ap.add_argument("--map-size", type=int, default=20_000, help="the other map's side in px (default 20000)")
    ap.add_argument("--map-res", type=float, default=10.0, help="its pixel in m (default 10)")
    ap.add_argument("--shards", type=int, default=4, help="written (done) shards of 8192² px (default 4)")
    ap.add_argument("--planned", type=int, default=574_357, help="planned chunks (default: national's)")
    ap.add_argument("--out", default=None, help="results file [default: results/validate.json]")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-validate-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        build(work, args)
        return
    me = [sys.executable, __file__]
    try:
        # Built in a child too: a measured child forked from a big parent would count its pages.
        built = child([*me, "--build-only", "--keep", str(work), *sys.argv[1:]])
        run = json.loads((work / "build.json").read_text())
        points = child([*me, "--child", "points", str(work / "run"), str(work / "points.csv")])
        against = child([*me, "--child", "against", str(work / "run"), str(work / "map.tif")])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    build_s = built["seconds"]
    result = {"build_s": build_s, "planned_chunks": run["planned"], "done_chunks": run["done_chunks"],
              "points": {"n": args.points, "hit": args.hit, **points},
              "against": {"size": args.map_size, "res_m": args.map_res, **against}}
    for part in (result["points"], result["against"]):
        part["validate_s"] = float(part["stdout"].split()[0])
    print(result)
    small = args.points != 1_000_000 or args.map_size != 20_000
    save(result, args.out, "validate-small.json" if small else "validate.json")


if __name__ == "__main__":
    main()
