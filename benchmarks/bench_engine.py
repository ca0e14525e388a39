"""Engine speed: bare model forward vs. the full per-chunk engine, same data, same threads.

(a) the bare forward of L2HNet (the network as the checkpoint builds it) on
in-memory tensors, at several patch sizes in both memory layouts (the best one
counts); (b) the engine reading chunk + halo from a Zarr store and writing
classes to another, shard by shard, in this process, with its patch size
chosen as a run would (``auto``) or given.  Prints pixels/s of both and the
ratio b/a, and writes a JSON result.  It also times (c) the engine's own form
of the network (BatchNorm folded, ``forward_core`` on patches with their
context) on in-memory tensors at the engine's patch size: b/c is what reading,
writing and the rest of the engine cost on their own.

    python benchmarks/bench_engine.py                       # CPU, width 64
    python benchmarks/bench_engine.py --device cuda --widths 64,128 --amps none,bf16
    python benchmarks/bench_engine.py --arch paraformer     # against the authors' test.py loop
    python benchmarks/bench_engine.py --arch paraformer --device cuda --amps bf16 --size 2240

``--arch paraformer`` is described in ``engine_paraformer.py``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import engine_paraformer
import numpy as np
import torch
from distributed import Client, LocalCluster
from results_file import save

from sinolc_dist.engine.inference import (
    ModelRef,
    ShardTask,
    compute_shard,
    keep_heap,
    load_model,
    run_shard,
    write_shard,
)
from sinolc_dist.engine.patches import patch_size
from sinolc_dist.grid import CHINA_ALBERS, Grid
from sinolc_dist.models.checkpoint import ModelSpec, save_checkpoint
from sinolc_dist.models.l2hnet import L2HNet
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.state import StateStore
from sinolc_dist.stages.dispatch import dispatch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(run, device: torch.device, amp: str, seconds: float) -> float:
    """Calls of ``run`` per second over about ``seconds``, after one warm-up call."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        run()
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            run()
            n += 1
        _sync(device)
    return n / (time.perf_counter() - t0)


def bare_forward(model: torch.nn.Module, device: torch.device, patch: int, amp: str, seconds: float,
                 layout: torch.memory_format) -> float:
    """Pixels/s of the model alone on a resident random tensor of ``patch``² in ``layout``."""
    model = model.to(memory_format=layout)
    x = torch.randn(1, 3, patch, patch, device=device).contiguous(memory_format=layout)
    return _timed(lambda: model(x).argmax(1), device, amp, seconds) * patch * patch


def engine_form(ref: ModelRef, patch: int, seconds: float) -> float:
    """Pixels/s of the engine's form of the network on inner patches with their context, in memory."""
    model = load_model(ref)
    ctx = model.radius or 0
    x = torch.randn(1, 3, patch + 2 * ctx, patch + 2 * ctx, device=model.device)
    x = x.contiguous(memory_format=torch.channels_last)
    return _timed(lambda: model.core(x, (False,) * 4).argmax(1), model.device, ref.amp, seconds) * patch ** 2


def _setup(ckpt: Path, size: int, chunk: int, patch: int | str, device: str, amp: str, workdir: Path,
           compile_: bool) -> list[ShardTask]:
    """An input store over a ``size``² raster, a fresh output store, one task per shard."""
    grid = Grid(crs=CHINA_ALBERS, origin=(1e6, 3.4e6), size=(size, size), chunk=chunk,
                block=min(512, chunk), shard=2, halo=16)
    src_path = workdir / f"in-{size}-{chunk}.zarr"
    if not src_path.exists():
        rng = np.random.default_rng(0)
        image = np.clip(rng.normal(128, 40, (3, size // 8, size // 8)), 1, 255).astype(np.uint8)
        image = image.repeat(8, 1).repeat(8, 2)
        stores.write_window(stores.create_store(src_path, grid, "input"), grid.full_window, image)
    dst = workdir / f"out-{size}-{chunk}-{patch}-{amp}-{time.time_ns()}.zarr"
    stores.create_store(dst, grid, "output")
    ref = ModelRef(str(ckpt), patch=patch, device=device, amp=amp, compile=compile_)
    tasks = [ShardTask(grid, sid, group, str(src_path), str(dst), ref)
             for sid, group in grid.by_shard(grid.chunks_in(grid.full_window)).items()]
    return tasks


def engine(ckpt: Path, size: int, chunk: int, patch: int | str, device: str, amp: str,
           workdir: Path, compile_: bool = False) -> tuple[float, int]:
    """Pixels/s of the engine, Zarr to Zarr, over a ``size``² raster, in this process; its patch side."""
    tasks = _setup(ckpt, size, chunk, patch, device, amp, workdir, compile_)
    run_shard(tasks[0])  # warm-up (patch calibration, kernel selection, caches)
    t0 = time.perf_counter()
    for task in tasks:
        run_shard(task)
    return size * size / (time.perf_counter() - t0), patch_size(load_model(tasks[0].model), chunk)


def dispatched(ckpt: Path, size: int, chunk: int, patch: int, device: str, amp: str,
               workdir: Path, two_stage: bool) -> float:
    """Pixels/s through the driver on a one-GPU worker (2 threads, resource GPU=1).

    ``two_stage`` splits each shard into a compute task (asks the GPU) and a write
    task (asks nothing), so the worker writes one shard while computing the next.
    """
    tasks = _setup(ckpt, size, chunk, patch, device, amp, workdir, False)
    with LocalCluster(n_workers=1, threads_per_worker=2, resources={"GPU": 1}, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client, \
            StateStore(workdir / f"state-{time.time_ns()}.sqlite") as state:
        state.add_chunks((c, ()) for t in tasks for c in t.chunks)
        client.submit(run_shard, tasks[0], resources={"GPU": 1}).result()  # warm-up
        stages = {"work": compute_shard, "finish": write_shard} if two_stage else {}
        t0 = time.perf_counter()
        report = dispatch(client, state, tasks, retries=0, max_in_flight=4, resources={"GPU": 1},
                          **stages)
        seconds = time.perf_counter() - t0
    assert report.done == sum(len(t.chunks) for t in tasks), report
    return size * size / seconds


LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def measure(args: argparse.Namespace, model: torch.nn.Module, ckpt: Path, amp: str, work: Path) -> dict:
    """One row: bare forward, engine and the engine's network form, in ``args.rounds`` interleaved rounds.

    Each figure is the best of its rounds (this machine is shared and noisy);
    the per-round ratios are kept too.
    """
    device = torch.device(args.device)
    patch = args.patch if args.patch == "auto" else int(args.patch)
    ref = ModelRef(str(ckpt), patch=patch, device=args.device, amp=amp, compile=args.compile)
    rounds: list[dict] = []
    for _ in range(args.rounds):
        bare = {f"{p} {name}": bare_forward(model, device, int(p), amp, args.seconds, layout)
                for p in args.patches.split(",") if int(p) <= args.chunk for name, layout in LAYOUTS.items()}
        eng, eng_patch = engine(ckpt, args.size, args.chunk, patch, args.device, amp, work, args.compile)
        form = engine_form(ref, eng_patch, args.seconds)
        rounds.append({"bare_px_s": bare, "engine_px_s": eng, "engine_form_px_s": form,
                       "ratio_engine_over_bare": eng / max(bare.values())})
        print(f"  round {len(rounds)}: best bare {max(bare.values()):,.0f} px/s, engine {eng:,.0f} px/s "
              f"(patch {eng_patch}), ratio {eng / max(bare.values()):.3f}", flush=True)
    bare = {k: max(r["bare_px_s"][k] for r in rounds) for k in rounds[0]["bare_px_s"]}
    best = max(bare, key=lambda k: bare[k])
    eng = max(r["engine_px_s"] for r in rounds)
    form = max(r["engine_form_px_s"] for r in rounds)
    row = {"width": int(ckpt.stem.removeprefix("l2hnet")), "amp": amp, "compile": args.compile,
           "bare_px_s": bare, "best_bare": best, "best_bare_px_s": bare[best], "engine_patch": eng_patch,
           "engine_px_s": eng, "ratio_engine_over_bare": eng / bare[best],
           "engine_form_px_s": form, "ratio_engine_over_engine_form": eng / form,
           "ratio_per_round": [r["ratio_engine_over_bare"] for r in rounds], "rounds": rounds}
    if args.dispatch:
        for two_stage in (False, True):
            px = dispatched(ckpt, args.size, args.chunk, eng_patch, args.device, amp, work, two_stage)
            name = "dispatch_two_stage_px_s" if two_stage else "dispatch_one_stage_px_s"
            row[name] = px
            print(f"  {name}: {px:,.0f} px/s ({px / bare[best]:.3f} of bare)", flush=True)
    print(f"width {row['width']} amp {amp}: bare {bare[best]:,.0f} px/s at {best} "
          f"(all: {', '.join(f'{k}: {v:,.0f}' for k, v in bare.items())}); "
          f"engine {eng:,.0f} px/s at patch {eng_patch}; ratio {eng / bare[best]:.3f}; "
          f"engine's network form in memory {form:,.0f} px/s (engine/form {eng / form:.3f})", flush=True)
    return row


def main() -> None:
    """Run the benchmark and write ``benchmarks/results/engine-<device>.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["l2hnet", "paraformer"], default="l2hnet")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--widths", default="64")
    ap.add_argument("--amps", default="none")
    ap.add_argument("--patches", default="128,192,256,384,512", help="patch sides of the bare forward")
    ap.add_argument("--patch", default="auto", help="the engine's model.patch (auto: chosen as in a run)")
    ap.add_argument("--size", type=int, default=None,
                    help="raster side for the engine run [default: 2048; paraformer: 672]")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per bare-forward figure and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best of each counts)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--dispatch", action="store_true",
                    help="also run through the driver on a one-GPU LocalCluster worker, with the shard "
                         "write as its own task or not")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (both measurements)")
    ap.add_argument("--mem-theirs", default="2048,4096,5120",
                    help="paraformer: raster sides of the test.py loop's memory measurement ('' to skip)")
    ap.add_argument("--mem-ours", default="2048,16384", help="paraformer: raster sides of the engine's")
    ap.add_argument("--mem-chunk", type=int, default=448, help="paraformer: chunk side of the engine's")
    ap.add_argument("--mem-forwards", type=int, default=4,
                    help="paraformer: chips the test.py loop really forwards in its memory measurement")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.arch == "paraformer":
        args.size = args.size or 672
        keep_heap()
        engine_paraformer.main(args)
        return
    args.size = args.size or 2048
    keep_heap()  # the same allocator setting for the bare baseline as the engine uses
    device = torch.device(args.device)
    rows: list[dict] = []
    result = {
        "benchmark": "engine", "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "size": args.size,
        "chunk": args.chunk, "rows": rows,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for width in [int(w) for w in args.widths.split(",")]:
            torch.manual_seed(0)
            model = L2HNet(width=width).eval()
            ckpt = work / f"l2hnet{width}.pt"
            save_checkpoint(ckpt, model, ModelSpec(width=width))
            model = model.to(device)
            if args.compile:
                model = torch.compile(model)
            for amp in args.amps.split(","):
                row = measure(args, model, ckpt, amp, work)
                rows.append(row)
                save(result, args.out, f"engine-{device.type}.json")  # after every row: partial runs count


if __name__ == "__main__":
    main()
