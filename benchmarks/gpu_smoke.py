"""GPU agreement check: the engine on CUDA (fp32, bf16, blended, TorchScript) vs CPU fp32.

Classifies one synthetic demo scene with the shipped demo checkpoint through
``classify_chunk`` on the CPU (the reference) and on the GPU in several modes,
and reports the fraction of pixels that agree with the reference and with the
synthetic truth.  Needs a CUDA device; writes ``benchmarks/results/gpu-smoke.json``.

    python benchmarks/gpu_smoke.py [--size 1024]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_file import save

from sinolc_dist.demo.scene import make_scene
from sinolc_dist.engine.inference import ModelRef, classify_chunk, load_model
from sinolc_dist.grid import CHINA_ALBERS, ChunkId, Grid
from sinolc_dist.models import DEMO_CHECKPOINT
from sinolc_dist.models.checkpoint import load_checkpoint


def classify(ref: ModelRef, grid: Grid, image: np.ndarray) -> np.ndarray:
    """The engine's class map of the whole (small) grid, chunk by chunk."""
    model = load_model(ref)
    out = np.zeros(grid.size, np.uint8)
    for cid in grid.chunks_in(grid.full_window):
        hw = grid.halo_window(cid)
        out[grid.chunk_window(cid).slices()] = classify_chunk(
            model, grid, ChunkId(*cid), image[:, hw.row0:hw.row1, hw.col0:hw.col1])
    return out


def main() -> None:
    """Run the modes and write the agreement figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rgb, truth = make_scene(args.size, args.size, 777)
    rgb = np.maximum(rgb, 1)
    grid = Grid(crs=CHINA_ALBERS, origin=(1e6, 3.4e6), size=(args.size, args.size), chunk=512,
                block=256, shard=2, halo=16)
    ckpt = str(DEMO_CHECKPOINT)
    reference = classify(ModelRef(ckpt, patch=512, device="cpu"), grid, rgb)
    rows = {"cpu fp32": {"agree_cpu": 1.0, "accuracy": float((reference == truth).mean())}}
    with tempfile.TemporaryDirectory() as tmp:
        ts = Path(tmp) / "l2hnet.ts"
        module = load_checkpoint(ckpt).build()
        torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3, 64, 64)), ts)
        spec = load_checkpoint(ckpt).spec
        overrides = {"bands": spec.bands, "classes": spec.classes, "mean": spec.mean, "std": spec.std}
        modes = {
            "cuda fp32": ModelRef(ckpt, patch=512, device="cuda"),
            "cuda bf16": ModelRef(ckpt, patch=512, device="cuda", amp="bf16"),
            "cuda bf16 compiled": ModelRef(ckpt, patch=512, device="cuda", amp="bf16", compile=True),
            "cuda gaussian blend bf16": ModelRef(ckpt, patch=512, device="cuda", amp="bf16",
                                                 blend="gaussian", chip_size=256),
            "cuda torchscript bf16": ModelRef(str(ts), patch=512, device="cuda", amp="bf16",
                                              plugin="torchscript", receptive_radius=11,
                                              overrides=overrides),
        }
        for name, ref in modes.items():
            t0 = time.perf_counter()
            got = classify(ref, grid, rgb)
            rows[name] = {"agree_cpu": float((got == reference).mean()),
                          "accuracy": float((got == truth).mean()),
                          "seconds_incl_load": time.perf_counter() - t0}
            print(name, json.dumps(rows[name]), flush=True)
    result = {"benchmark": "gpu-smoke", "device_name": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "size": args.size, "modes": rows}
    save(result, args.out, "gpu-smoke.json")


if __name__ == "__main__":
    main()
