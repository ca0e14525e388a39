"""Provincial COGs: our ``write_cog`` against GDAL's own COG writer, on the same pixels.

Builds a synthetic output store (a real sharded Zarr v3 store on the grid, blocky
classes that compress about like a class map) of SIZE x SIZE px, then measures, each
in a child process whose peak resident memory is read from the kernel (``wait4``):

(a) ours: ``write_cog`` of the whole window masked by a province-like polygon of
    2,000 vertices (read Zarr → mask → class areas → staging GeoTIFF → COG → validate);
(b) GDAL: the same masked pixels, exported once to a tiled DEFLATE GeoTIFF (GDAL cannot
    read our Zarr v3), through ``gdal_translate -of COG -co COMPRESS=DEFLATE
    -co BLOCKSIZE=512 -co OVERVIEW_RESAMPLING=MODE`` (Debian's GDAL), and through
    ``rasterio.shutil.copy(driver="COG")`` with the same options (the GDAL inside
    rasterio, the one ``write_cog`` uses).

Throughput is MB/s of pixels (1 byte each) over the whole window, from the time of the
write itself (measured inside the Python children, so interpreter start and imports are
left out; ``gdal_translate`` is timed as a whole, its start being milliseconds); the
ratio is ours / GDAL (target >= 1.0).  Each writer runs ``--repeat`` times, interleaved,
and the fastest run counts (the machine may be shared).  The outputs' pixels are checked
equal.  Compression runs on one core everywhere (``GDAL_NUM_THREADS`` unset).

    python benchmarks/bench_mosaic.py [--size 16384] [--repeat 3] [--out FILE] [--keep DIR]
    python benchmarks/bench_mosaic.py --size 65536      # the large-province memory case

``--workers 1,2[,4…]`` measures the COG written by many tasks instead
(:func:`sinolc_dist.deliver.tiled.submit_cog`, the same file as ``write_cog``): for each
count a LocalCluster of that many single-threaded worker processes (127.0.0.1) writes the
same masked window; px/s, MB/s, the ratio to the first count (target 2 / 1 >= 1.7 on two
idle cores), the workers' peak resident memory, and the file's SHA-256 (the same for every
count, and the same as ``write_cog``'s) go to ``results/mosaic-workers[-<size>].json``.
Blocks are ``--block-px`` px (default the COG tile x 16 = 8192): give a size with at
least a few blocks per worker (e.g. ``--size 65536`` for 16 workers: 64 blocks).

    python benchmarks/bench_mosaic.py --workers 1,2 --size 16384 --block-px 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from distributed import Client, LocalCluster
from results_file import save

from sinolc_dist.deliver.cog import write_cog
from sinolc_dist.deliver.tiled import submit_cog
from sinolc_dist.grid import CHINA_ALBERS, ChunkId, Grid
from sinolc_dist.rundir.stores import create_store, open_array, write_window

GDAL_OPTIONS = {"COMPRESS": "DEFLATE", "BLOCKSIZE": "512", "OVERVIEW_RESAMPLING": "MODE"}


def make_grid(size: int) -> Grid:
    """A size x size px Albers grid near Wuhan, with the national workflow's layout."""
    chunk = min(4096, size)
    return Grid(crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0),
                size=(size, size), chunk=chunk, block=min(512, chunk), shard=2, halo=16)


def province(size: int, grid: Grid) -> shapely.Polygon:
    """A star-shaped outline of 2,000 vertices covering about half the window."""
    rng = np.random.default_rng(2)
    theta = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    radius = 0.42 * size * (1 + 0.15 * np.sin(5 * theta) + 0.03 * rng.standard_normal(theta.size))
    x0, y0 = grid.origin
    return shapely.Polygon(np.column_stack([x0 + size / 2 + radius * np.cos(theta),
                                            y0 - size / 2 + radius * np.sin(theta)]))


def synthetic_classes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Land-cover-like classes: 128 px fields, 8 px mosaics in 30 % of them, roads."""
    def blocks(cell: int) -> np.ndarray:
        codes = rng.integers(1, 12, size=(-(-height // cell), -(-width // cell)), dtype=np.uint8)
        return np.kron(codes, np.ones((cell, cell), np.uint8))[:height, :width]

    fields, detail = blocks(128), blocks(8)
    mixed = blocks(128) > 8  # 3 of 11 codes: about 27 %
    out = np.where(mixed, detail, fields)
    out[::512, :] = 1  # roads, one pixel wide
    out[:, ::512] = 1
    return out


def build_store(path: Path, grid: Grid) -> None:
    """Write every shard of the synthetic store (one shard at a time)."""
    arr = create_store(path, grid, "output")
    rng = np.random.default_rng(1)
    rows, cols = (-(-n // grid.shard_px) for n in grid.size)
    for r in range(rows):
        for c in range(cols):
            win = grid.shard_window(ChunkId(r, c))
            write_window(arr, win, synthetic_classes(win.height, win.width, rng))


def child(argv: list[str]) -> dict:
    """Run a command in a child process; its wall time and its own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv[:4])}… failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "stdout": out.strip()}


def run_ours(store: Path, dst: Path, size: int) -> None:
    """Child (a): our write_cog over the whole store, masked by the province outline."""
    grid = make_grid(size)
    report = write_cog(dst, grid, open_array(store, grid), grid.full_window,
                       mask_geometry=province(size, grid))
    print(json.dumps({"write_seconds": report.seconds, "overviews": report.overviews,
                      "valid": report.valid}))


def run_rasterio_cog(src: Path, dst: Path) -> None:
    """Child (b2): GDAL's COG driver through rasterio, the same options as gdal_translate."""
    start = time.perf_counter()
    rasterio.shutil.copy(src, dst, driver="COG", **GDAL_OPTIONS)
    print(json.dumps({"write_seconds": time.perf_counter() - start}))


def same_pixels(a: Path, b: Path) -> bool:
    """Whether two rasters hold the same full-resolution pixels (compared in strips)."""
    with rasterio.open(a) as fa, rasterio.open(b) as fb:
        if fa.shape != fb.shape:
            return False
        for row in range(0, fa.height, 2048):
            win = ((row, min(row + 2048, fa.height)), (0, fa.width))
            if not np.array_equal(fa.read(1, window=win), fb.read(1, window=win)):
                return False
    return True


def main() -> None:
    """Build the store, time the three writers and write ``benchmarks/results/mosaic*.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=16384, help="window side in px (default 16384)")
    ap.add_argument("--out", default=None, help="results file [default: results/mosaic.json, "
                                                "or mosaic-<size>.json for another size]")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each writer; the fastest counts")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it")
    ap.add_argument("--workers", default=None, help="comma-separated worker counts: time submit_cog on "
                                                    "a LocalCluster of each (instead of the writers above)")
    ap.add_argument("--block-px", type=int, default=None, help="submit_cog's block side (default 8192)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *paths = args.child
        if kind == "ours":
            run_ours(Path(paths[0]), Path(paths[1]), args.size)
        else:
            run_rasterio_cog(Path(paths[0]), Path(paths[1]))
        return
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-mosaic-"))
    work.mkdir(parents=True, exist_ok=True)
    name = "mosaic-workers" if args.workers else "mosaic"
    try:
        if args.workers:
            counts = [int(n) for n in args.workers.split(",")]
            result = measure_workers(work, args.size, args.repeat, counts, args.block_px)
        else:
            result = measure(work, args.size, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    save(result, args.out, f"{name}.json" if args.size == 16384 else f"{name}-{args.size}.json")


def _worker_peak_mib() -> float:
    """A worker's peak resident memory, MiB (run on each worker)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_workers(work: Path, size: int, repeat: int, counts: list[int], block_px: int | None) -> dict:
    """submit_cog of the whole masked window on a LocalCluster of each worker count (fastest run counts)."""
    grid, store = make_grid(size), work / "output.zarr"
    if not store.exists():
        build_store(store, grid)
    mask, runs = province(size, grid), {}
    for n in counts:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            seconds, digests = [], set()
            for _ in range(repeat):
                start = time.perf_counter()
                future = submit_cog(client, work / f"tiled-{n}.tif", grid, store, grid.full_window, mask,
                                    key_prefix="bench", block_px=block_px)
                report = future.result()
                seconds.append(time.perf_counter() - start)
                digests.add(report.sha256)
            peaks = client.run(_worker_peak_mib)
        best = min(seconds)
        runs[str(n)] = {"workers": n, "seconds": best, "seconds_all": seconds, "px_per_s": size * size / best,
                        "mb_per_s": size * size / 1e6 / best, "cog_mb": report.bytes / 1e6,
                        "block_tasks": sum("-block-" in k for k in future.keys), "tasks": len(future.keys),
                        "worker_peak_rss_mib": max(peaks.values()), "sha256": sorted(digests)}
        print(f"{n:3d} worker(s) {best:7.2f} s  {runs[str(n)]['mb_per_s']:7.1f} MB/s  "
              f"peak {runs[str(n)]['worker_peak_rss_mib']:6.0f} MiB/worker  ({len(future.keys)} tasks)")
    first = runs[str(counts[0])]
    ratios = {k: r["mb_per_s"] / first["mb_per_s"] for k, r in runs.items()}
    print("  ".join(f"{k}/{counts[0]} = {v:.2f}" for k, v in ratios.items()))
    return {
        "benchmark": "mosaic-workers", "size_px": [size, size], "pixels": size * size, "block_px": block_px,
        "runs": runs, "ratios_to_first": ratios, "target_ratio_2_over_1": 1.7,
        "same_file_every_count": len({d for r in runs.values() for d in r["sha256"]}) == 1,
        "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
    }


def measure(work: Path, size: int, repeat: int) -> dict:
    """Every measurement of one run, as the results file holds them."""
    grid, mpx = make_grid(size), size * size / 1e6
    store, ours, export = work / "output.zarr", work / "ours.tif", work / "export.tif"
    t0 = time.perf_counter()
    if not store.exists():
        build_store(store, grid)
    build_s = time.perf_counter() - t0
    store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
    print(f"store {size}x{size} px: {store_mb:.1f} MB Zarr, built in {build_s:.1f} s")
    me = [sys.executable, __file__, "--size", str(size), "--child"]
    gdal = shutil.which("gdal_translate")
    commands = {"ours": [*me, "ours", str(store), str(ours)]}
    if gdal:
        commands["gdal_translate"] = [
            gdal, "-q", "-of", "COG", *(x for k, v in GDAL_OPTIONS.items() for x in ("-co", f"{k}={v}")),
            str(export), str(work / "gdal_translate.tif")]
    commands["rasterio_cog"] = [*me, "rasterio", str(export), str(work / "rasterio_cog.tif")]
    runs: dict[str, dict] = {name: {"seconds_all": [], "peak_rss_mib": 0.0} for name in commands}
    for i in range(repeat):
        for name, cmd in commands.items():
            got = child(cmd)
            if name == "ours" and i == 0:  # the same masked pixels, for GDAL to read
                rasterio.shutil.copy(ours, export, driver="GTiff", TILED=True, BLOCKXSIZE=512,
                                     BLOCKYSIZE=512, COMPRESS="DEFLATE")
            extra = json.loads(got["stdout"]) if got["stdout"] else {}
            run = runs[name]
            run["seconds_all"].append(extra.pop("write_seconds", got["seconds"]))
            run["process_seconds_last"] = got["seconds"]
            run["peak_rss_mib"] = max(run["peak_rss_mib"], got["peak_rss_mib"])
            run.update(extra)
    if gdal:
        runs["gdal_translate"]["gdal"] = subprocess.run(
            [gdal, "--version"], capture_output=True, text=True).stdout.strip()
    runs["rasterio_cog"]["gdal"] = f"GDAL {rasterio.__gdal_version__} (rasterio {rasterio.__version__})"
    for name, run in runs.items():
        run["seconds"] = min(run["seconds_all"])
        run["mb_per_s"] = mpx / run["seconds"]
        if name != "ours":
            run["same_pixels_as_ours"] = same_pixels(ours, work / f"{name}.tif")
        every = ", ".join(f"{t:.2f}" for t in run["seconds_all"])
        print(f"{name:15s} {run['seconds']:7.2f} s  {run['mb_per_s']:7.1f} MB/s  "
              f"peak {run['peak_rss_mib']:7.0f} MiB  (all runs: {every} s)")
    baseline = "gdal_translate" if gdal else "rasterio_cog"
    a = runs["ours"]
    ratios = {f"ours/{k}": a["mb_per_s"] / v["mb_per_s"] for k, v in runs.items() if k != "ours"}
    print("  ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    return {
        "benchmark": "mosaic", "size_px": [size, size], "pixels": size * size,
        "store_mb": store_mb, "cog_mb": ours.stat().st_size / 1e6,
        "export_tif_mb": export.stat().st_size / 1e6,
        "runs": runs, "baseline": baseline, "ratio": ratios[f"ours/{baseline}"], "ratios": ratios,
        "target_ratio": 1.0, "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
    }


if __name__ == "__main__":
    main()
