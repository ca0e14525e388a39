"""``bench_engine.py --arch paraformer``: the engine against the authors' test.py loop on the same input.

(a) Speed over a ``--size``² raster: *theirs* is the re-implementation of test.py's loop
(``authors_test_py.py``: the whole image in RAM, 224 px chips at stride 112 through the
network one at a time, float32); *ours* is the engine (``blend: authors``, Zarr → Zarr,
``batch: auto``, ``amp`` as asked on a GPU) with one chunk covering the raster, so both
run exactly the same chips.  Pixels/s of each, the ratio, and the share of labels that
agree (ours writes channel 0 as nodata there, as test.py writes index 0).
(b) Peak resident memory, each in a child process, over rasters of growing side: theirs
holds the image and two float32 ``(classes, H, W)`` arrays (the sum and its quotient;
the network runs on the first chips and their probabilities are reused for the others,
so the arrays fill as in the full loop), and its growth per pixel between the last two
sides gives its peak at 16384² (beyond a 24 GiB machine); ours classifies ``--mem-chunk``
px chunks of a Zarr store over the raster (the production chunk of ``cn-paraformer`` is
3584 px).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from authors_test_py import blended_like_test_py
from results_file import save

from sinolc_dist.engine.inference import ModelRef, ShardTask, load_model, run_shard
from sinolc_dist.grid import CHINA_ALBERS, Grid
from sinolc_dist.models.checkpoint import load_checkpoint
from sinolc_dist.models.paraformer import Paraformer
from sinolc_dist.rundir import stores

BANDS, CLASSES = 4, 17  # the authors' public Chesapeake configuration
MEAN, STD = [117.67, 130.39, 121.52, 162.92], [39.25, 37.82, 24.24, 60.03]


def _files(work: Path) -> tuple[Path, dict]:
    """A seeded random Paraformer saved as the authors' training does, and the spec a run gives it."""
    torch.manual_seed(0)
    ckpt = work / "paraformer.pth"
    torch.save(Paraformer(bands=BANDS, classes=CLASSES, width=64).state_dict(), ckpt)
    legend = work / "index.yaml"  # test.py writes the channel index: codes 1..16, channel 0 as nodata
    legend.write_text(yaml.safe_dump({"classes": {i: {"name": f"index {i}", "color": [i, i, i]}
                                                  for i in range(1, CLASSES)}}))
    spec = {"arch": "paraformer", "bands": ["red", "green", "blue", "nir"], "mean": MEAN, "std": STD,
            "classes": list(range(CLASSES)), "legend": str(legend)}
    return ckpt, spec


def _image(size: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    side = -(-size // 16)
    base = rng.integers(1, 255, size=(BANDS, side, side)).repeat(16, 1).repeat(16, 2)[:, :size, :size]
    return np.clip(base + rng.integers(-20, 20, (BANDS, size, size)), 1, 255).astype(np.uint8)


def _grid(size: int, chunk: int, halo: int) -> Grid:
    block = next(b for b in (512, 448, 256, 224, 128, 112, 64, 32, 16) if chunk % b == 0)
    return Grid(crs=CHINA_ALBERS, origin=(1e6, 3.4e6), size=(size, size), chunk=chunk, block=block,
                shard=1, halo=halo)


def theirs(ckpt: Path, spec: dict, image: np.ndarray, device: str) -> tuple[float, np.ndarray]:
    """Seconds and argmax index of the test.py loop over the image (the network as built from the file)."""
    network = load_checkpoint(ckpt, spec).build().to(device)
    t0 = time.perf_counter()
    probs = blended_like_test_py(network.heads, image, MEAN, STD, CLASSES, device=device)
    labels = probs.argmax(axis=0).astype(np.uint8)
    return time.perf_counter() - t0, labels


def ours(ckpt: Path, spec: dict, image: np.ndarray, device: str, amp: str,
         work: Path) -> tuple[float, np.ndarray]:
    """Seconds and classes of the engine over the image as one chunk, Zarr to Zarr (after a warm-up chip)."""
    size = image.shape[1]
    grid = _grid(size, size, 0)
    src, dst = work / f"in-{size}.zarr", work / f"out-{size}-{time.time_ns()}.zarr"
    stores.write_window(stores.create_store(src, grid, "input", bands=BANDS), grid.full_window, image)
    out = stores.create_store(dst, grid, "output")
    ref = ModelRef(str(ckpt), device=device, amp=amp, blend="authors", chip_stride=112, overrides=spec)
    model = load_model(ref)
    with torch.inference_mode():
        model.module(torch.zeros(1, BANDS, 224, 224, device=model.device))  # warm-up, like theirs' first chip
    (cid,) = grid.chunks_in(grid.full_window)
    task = ShardTask(grid, grid.shard_of(cid), (cid,), str(src), str(dst), ref)
    t0 = time.perf_counter()
    assert all(r.ok for r in run_shard(task))
    return time.perf_counter() - t0, stores.read_window(out, grid.full_window)


def input_store(work: Path, size: int, chunk: int, halo: int) -> tuple[Grid, Path]:
    """A Zarr input store over a ``size``² raster, written a strip of chunks at a time (not in the child)."""
    grid = _grid(size, chunk, halo)
    path = work / f"in-{size}-{chunk}.zarr"
    if not path.exists():
        arr = stores.create_store(path, grid, "input", bands=BANDS)
        strip = _image(max(chunk, 256))
        for row in range(0, size, chunk):
            w = grid.full_window._replace(row0=row, row1=min(row + chunk, size))
            reps = -(-size // strip.shape[2])
            stores.write_window(arr, w, np.tile(strip[:, :w.height], (1, 1, reps))[:, :, :size])
    return grid, path


CHILD = r"""
import json, resource, sys
sys.path.insert(0, "benchmarks")
import torch
import engine_paraformer as ep
from sinolc_dist.rundir import stores
from sinolc_dist.engine.inference import ModelRef, ShardTask, run_shard
from sinolc_dist.grid import Grid
who, ckpt, spec, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
if who == "theirs":
    size = int(sys.argv[5])
    image = ep._image(size)  # test.py reads the whole image into RAM
    network = ep.load_checkpoint(ckpt, spec).build()
    labels = ep.blended_like_test_py(network.heads, image, ep.MEAN, ep.STD, ep.CLASSES, forwards=n).argmax(0)
else:
    grid, src, out = Grid.from_dict(json.loads(sys.argv[5])), sys.argv[6], sys.argv[7]
    ref = ModelRef(ckpt, device="cpu", blend="authors", chip_stride=112, overrides=spec)
    for cid in list(grid.chunks_in(grid.full_window))[:n]:
        assert all(r.ok for r in run_shard(ShardTask(grid, grid.shard_of(cid), (cid,), src, out, ref)))
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_memory(who: str, size: int, ckpt: Path, spec: dict, n: int, work: Path, chunk: int = 0) -> dict:
    """Peak RSS of a child: theirs over a ``size``² image (``n`` chips forwarded) or ours (``n`` chunks)."""
    args = [who, str(ckpt), json.dumps(spec), str(n)]
    if who == "theirs":
        args.append(str(size))
    else:
        grid, src = input_store(work, size, chunk, 112)
        out = work / f"out-{size}-{chunk}.zarr"
        stores.create_store(out, grid, "output")
        args += [json.dumps(grid.to_dict()), str(src), str(out)]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    row = {"who": who, "size": size, "chunk": chunk or None,
           **json.loads(proc.stdout.strip().splitlines()[-1])}
    row["bytes_per_px"] = row["peak_rss_mib"] * 2**20 / size**2
    what = f"{size}² ({chunk} px chunks)" if chunk else f"{size}²"
    print(f"  memory {who} {what}: peak {row['peak_rss_mib']:,.0f} MiB "
          f"({row['bytes_per_px']:.2f} B/px of the raster)", flush=True)
    return row


def main(args: argparse.Namespace) -> None:
    """Speed, agreement and memory; writes ``benchmarks/results/engine-paraformer-<device>.json``."""
    device = torch.device(args.device)
    amp = args.amps.split(",")[0]
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor()
    result: dict = {"benchmark": "engine-paraformer", "device": str(device), "device_name": name,
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "size": args.size,
                    "amp": amp, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt, spec = _files(work)
        image = _image(args.size)
        px = args.size ** 2
        for _ in range(args.rounds):  # interleaved: this machine is noisy
            t_theirs, l_theirs = theirs(ckpt, spec, image, args.device)
            t_ours, l_ours = ours(ckpt, spec, image, args.device, amp, work)
            row = {"theirs_px_s": px / t_theirs, "ours_px_s": px / t_ours, "ratio": t_theirs / t_ours,
                   "labels_agree": float((l_theirs == l_ours).mean())}
            result["rounds"].append(row)
            print(f"  theirs {row['theirs_px_s']:,.0f} px/s, ours {row['ours_px_s']:,.0f} px/s, "
                  f"ratio {row['ratio']:.2f}, labels agree {row['labels_agree']:.5f}", flush=True)
        result["theirs_px_s"] = max(r["theirs_px_s"] for r in result["rounds"])
        result["ours_px_s"] = max(r["ours_px_s"] for r in result["rounds"])
        result["ratio"] = result["ours_px_s"] / result["theirs_px_s"]
        result["batch"] = load_model(ModelRef(str(ckpt), device=args.device, amp=amp, blend="authors",
                                              chip_stride=112, overrides=spec)).batches
        save(result, args.out, f"engine-paraformer-{device.type}.json")
        if device.type == "cpu" and args.mem_theirs:
            result["memory"] = [peak_memory("theirs", s, ckpt, spec, args.mem_forwards, work)
                                for s in map(int, args.mem_theirs.split(","))]
            result["memory"] += [peak_memory("ours", s, ckpt, spec, 1, work, args.mem_chunk)
                                 for s in map(int, args.mem_ours.split(","))]
            a, b = [r for r in result["memory"] if r["who"] == "theirs"][-2:]
            slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 2**20 / (b["size"] ** 2 - a["size"] ** 2)
            result["theirs_growth_bytes_per_px"] = slope
            result["theirs_16384_extrapolated_gib"] = (b["peak_rss_mib"] * 2**20
                                                       + slope * (16384**2 - b["size"] ** 2)) / 2**30
            print(f"  theirs grows {slope:.0f} B/px: about {result['theirs_16384_extrapolated_gib']:.1f} GiB "
                  "at 16384²", flush=True)
            save(result, args.out, f"engine-paraformer-{device.type}.json")
