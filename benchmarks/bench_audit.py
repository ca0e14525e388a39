"""``audit`` and ``repair`` on a released-size class map, against a plain copy of the same file.

Writes a patterned class GeoTIFF of SIZE px (default 52000x48000, the authors'
example; tiled 512 px, DEFLATE, SinoLC-1 colours) in bands, so generating it
needs no more memory than one band.  It carries one column strip and one row
strip at the example's places scaled to SIZE (columns [43455, 48046) and rows
[39479, 42164) at full size), each copy with 2 % of its pixels changed.  Then,
each in a child process whose peak resident memory comes from the kernel
(``wait4``; target < 2 GiB):

(a) ``audit`` (library call: one streamed pass, both axes, seams on the 512 px grid);
(b) ``repair`` to a COG, and (c) to a tiled GeoTIFF (``--format gtiff``), the strips found by (a);
(d) the baseline: a plain copy of the same file with the same tiling and compression,
    ``gdal_translate -co TILED=YES -co BLOCKXSIZE=512 -co BLOCKYSIZE=512 -co COMPRESS=DEFLATE``
    when ``gdal_translate`` is installed, else the same through rasterio's GDAL
    (``rasterio.shutil.copy``: GDALCreateCopy, what gdal_translate runs for a plain copy).

MB/s is the file's pixels (1 byte each) over the child's wall time; the ratios are
ours / baseline (targets: audit >= 0.5, repair >= 1.0).  The audit must find both
strips exactly, and the repaired file must equal the map before the strips, which
is checked band by band against the generator.

    python benchmarks/bench_audit.py                      # 52000x48000: ~2.5 GB of pixels, needs ~3 GB disk
    python benchmarks/bench_audit.py --size 8000x7000     # a small run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin
from results_file import save

from sinolc_dist.legend import SINOLC

FULL = (48000, 52000)  # rows, columns of the authors' example
COLUMNS, ROWS = (43455, 48046), (39479, 42164)
COPY = {"TILED": "YES", "BLOCKXSIZE": "512", "BLOCKYSIZE": "512", "COMPRESS": "DEFLATE"}
BAND = 512
CODES = np.array([2, 3, 4, 5, 5, 7, 10, 4, 5, 2, 3], np.uint8)


def strips(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The example's column and row strips, ``(start, width)``, scaled to the file's size."""
    def scaled(span: tuple[int, int], n: int, full: int) -> tuple[int, int]:
        return round(span[0] * n / full), max(16, round((span[1] - span[0]) * n / full))
    return scaled(COLUMNS, width, FULL[1]), scaled(ROWS, height, FULL[0])


def ground(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The map before any strip, as a pure function of pixel coordinates: fields, lakes, roads."""
    u, v = 0.94 * x + 0.34 * y, -0.34 * x + 0.94 * y  # rotated field lattice, ~40 x 25 px parcels
    parcel = (np.floor(u / 41.0).astype(np.int64) * 7919 + np.floor(v / 26.0).astype(np.int64) * 104729)
    out = CODES[(parcel * 2654435761 >> 9) % CODES.size]
    wobble = 40 * np.sin(x / 97.0) * np.cos(y / 83.0)
    out[(np.hypot((y % 6000) - 3000, (x % 7000) - 3500) + wobble) < 900] = 9  # lakes
    out[np.abs(((x + 2 * y) % 5000) - 2500) < 2] = 1  # roads
    out[np.abs(((3 * x - y) % 9000) - 4500) < 3] = 1
    return out


def released(y0: int, rows: int, width: int, cut: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """Rows ``y0 …`` of the file as released: the ground with both strips in, 2 % of each copy changed."""
    (cs, cw), (rs, rw) = cut
    y, x = np.mgrid[y0:y0 + rows, 0:width]
    gy, gx = np.where(y < rs, y, y - rw), np.where(x < cs, x, x - cw)
    out = ground(gy, gx)
    copy = ((x >= cs) & (x < cs + cw)) | ((y >= rs) & (y < rs + rw))
    changed = copy & (((y * 73856093) ^ (x * 19349663)) % 50 == 0)
    out[changed] = out[changed] % 11 + 1
    return out


def build(path: Path, height: int, width: int) -> None:
    """Write the released-style file band by band (memory: one band)."""
    cut = strips(height, width)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32650", "transform": from_origin(300_000, 3_500_000, 1, 1), "nodata": 0,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write_colormap(1, SINOLC.colormap())
        for y0 in range(0, height, BAND):
            rows = min(BAND, height - y0)
            dst.write(released(y0, rows, width, cut), 1, window=((y0, y0 + rows), (0, width)))


def timed(argv: list[str]) -> dict:
    """Wall time and the child's own peak RSS (ru_maxrss from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv[:5])}… failed: {err[-2000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "stdout": out.strip()}


def run_child(kind: str, args: list[str]) -> None:
    """One step in this (child) process; prints JSON with the step's own seconds (imports left out)."""
    start = time.perf_counter()
    out: dict = {}
    if kind == "build":
        build(Path(args[0]), int(args[1]), int(args[2]))
    elif kind == "check":
        out["equal"] = equals_ground(Path(args[0]), int(args[1]), int(args[2]))
    elif kind == "audit":
        from sinolc_dist.audit.report import audit

        out = audit(Path(args[0])).to_dict()
    elif kind in ("repair-cog", "repair-gtiff"):
        from sinolc_dist.audit.repair import parse_strip, repair

        report = repair(Path(args[0]), Path(args[1]), [parse_strip(s) for s in args[2:]], fmt=kind[7:])
        out = report.to_dict() if report else {}
    else:  # the baseline through rasterio's GDAL
        rasterio.shutil.copy(args[0], args[1], driver="GTiff", **COPY)
    print(json.dumps({**out, "step_seconds": time.perf_counter() - start}))


def equals_ground(path: Path, height: int, width: int) -> bool:
    """Whether a repaired file equals the map before the strips (compared band by band)."""
    with rasterio.open(path) as src:
        if src.shape != (height, width):
            return False
        for y0 in range(0, height, BAND):
            rows = min(BAND, height - y0)
            y, x = np.mgrid[y0:y0 + rows, 0:width]
            if not np.array_equal(src.read(1, window=((y0, y0 + rows), (0, width))), ground(y, x)):
                return False
    return True


def measure(work: Path, height: int, width: int) -> dict:
    """Build the file, run the four steps, check the results (each a child: this process stays small)."""
    src, me = work / "released.tif", [sys.executable, __file__, "--child"]
    built = timed([*me, "build", str(src), str(height), str(width)])
    print(f"built {width}x{height} px ({src.stat().st_size / 1e6:.0f} MB) in {built['seconds']:.0f} s")
    (cs, cw), (rs, rw) = strips(height, width)
    gdal = shutil.which("gdal_translate")
    baseline = ([gdal, "-q", *(x for k, v in COPY.items() for x in ("-co", f"{k}={v}")), str(src),
                 str(work / "copy.tif")] if gdal else [*me, "copy", str(src), str(work / "copy.tif")])
    cuts, fixed = [f"columns:{cs}:{cs + cw}", f"rows:{rs}:{rs + rw}"], str(work / "fixed.tif")
    runs = {"baseline_copy": timed(baseline), "audit": timed([*me, "audit", str(src)])}
    (work / "copy.tif").unlink()
    runs["repair_cog"] = timed([*me, "repair-cog", str(src), fixed, *cuts])
    same = json.loads(timed([*me, "check", fixed, str(height - rw), str(width - cw)])["stdout"])["equal"]
    (work / "fixed.tif").unlink()
    runs["repair_gtiff"] = timed([*me, "repair-gtiff", str(src), fixed, *cuts])
    mpx = width * height / 1e6
    for name, run in runs.items():
        told = json.loads(run.pop("stdout") or "{}")
        run["step_seconds"] = told.pop("step_seconds", run["seconds"])  # gdal_translate: the process
        run["mb_per_s"] = mpx / run["step_seconds"]
        run["told"] = told
        print(f"{name:14s} {run['step_seconds']:7.1f} s (process {run['seconds']:.1f} s) "
              f"{run['mb_per_s']:7.1f} MB/s  peak {run['peak_rss_mib']:6.0f} MiB")
    found = runs["audit"].pop("told")
    got = [(s["axis"], s["start"], s["width"]) for s in found["strips"]]
    want = [("columns", cs, cw), ("rows", rs, rw)]
    base = runs["baseline_copy"]["mb_per_s"]
    result = {
        "benchmark": "audit", "size_px": [width, height], "file_mb": src.stat().st_size / 1e6,
        "baseline": subprocess.run([gdal, "--version"], capture_output=True, text=True).stdout.strip() if gdal
        else f"rasterio.shutil.copy (GDAL {rasterio.__gdal_version__})",
        "ours_gdal": f"GDAL {rasterio.__gdal_version__} (rasterio {rasterio.__version__})",
        "strips_injected": want, "strips_found": got, "strips_exact": got == want,
        "seams_found": len(found["seams"]), "repaired_equals_map_before_strips": same, "runs": runs,
        "ratios": {name: run["mb_per_s"] / base for name, run in runs.items() if name != "baseline_copy"},
        "targets": {"audit": 0.5, "repair": 1.0, "peak_rss_mib": 2048}, "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(f"strips exact: {result['strips_exact']}, repaired = map before: {same}, ratios: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()))
    return result


def main() -> None:
    """Parse, build, measure, save ``benchmarks/results/audit[-WxH].json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="52000x48000", help="WIDTHxHEIGHT in px (default 52000x48000)")
    ap.add_argument("--out", default=None, help="results file [default: results/audit.json, or "
                                                "audit-<size>.json for another size]")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child[0], args.child[1:])
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(work, height, width)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    save(result, args.out, "audit.json" if args.size == "52000x48000" else f"audit-{args.size}.json")


if __name__ == "__main__":
    main()
