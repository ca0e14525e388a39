"""Train the demo L2HNet on synthetic scenes and save it as a sinolc checkpoint.

It draws a few seeded scenes with ``sinolc_dist.demo.scene.make_scene``, fits the SinoLC-1
authors' L2HNet (their layout: ``sinolc_dist.models.l2hnet``) with a 1×1 head,
``L2HNet(bands=3, classes=11, width=W)``, on random crops (output channel ``i`` is legend
code ``i + 1``) with Adam and a one-cycle learning-rate schedule, reports overall accuracy
on held-out scenes of other seeds, and writes the checkpoint with the band mean/std of the
training scenes.  The training script is ours; the network is the authors'.

Run ``python -m sinolc_dist.demo.train [--out PATH] [--steps N] [--width W] [--seed S]
[--device D]``.  The shipped ``sinolc_dist/models/weights/demo_l2hnet.pt`` is
``--steps 1500`` on two CPU cores (1.1–1.3 s a step: 45 minutes with evaluation, beside
other work); ``--device cuda`` takes about a minute on one GPU.  Everything is seeded
(torch, a numpy ``Generator`` for the crops, deterministic kernels and loss), so the same
arguments, device type and torch build reproduce the weights exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sinolc_dist.demo.scene import CLASSES_USED, make_scene
from sinolc_dist.models import DEMO_CHECKPOINT
from sinolc_dist.models.checkpoint import ModelSpec, save_checkpoint
from sinolc_dist.models.l2hnet import L2HNet

CLASSES: tuple[int, ...] = tuple(range(1, 12))  # output channel i ↔ legend code i + 1
TRAIN_SEEDS: tuple[int, ...] = (101, 102, 103, 104, 105, 106)
TRAIN_SIZE = 2048
EVAL_SEEDS: tuple[int, ...] = (12345, 23456, 34567)
EVAL_SIZE = 2048
PATCH = 96
BATCH = 8
LEARNING_RATE = 2e-3


def band_stats(scenes: Sequence[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std (0-255 scale) over ``(3, H, W)`` scenes, for the checkpoint.

    Inference computes ``(x - mean) / std``, so the statistics must come from the
    imagery the model was trained on.
    """
    hist = sum(np.stack([np.bincount(band.ravel(), minlength=256) for band in s]) for s in scenes)
    values = np.arange(256, dtype=np.float64)
    n = hist.sum(axis=1)
    mean = hist @ values / n
    std = np.sqrt(hist @ values**2 / n - mean**2)
    return tuple(mean.tolist()), tuple(std.tolist())


def normalise(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Turn uint8 ``(..., 3, H, W)`` imagery into the float tensor the network expects."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (torch.from_numpy(np.ascontiguousarray(rgb)).float() - m) / s


def sample_batch(
    rng: np.random.Generator,
    scenes: Sequence[tuple[np.ndarray, np.ndarray]],
    batch: int = BATCH,
    patch: int = PATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``batch`` random ``patch``² crops (rgb, labels) from random training scenes."""
    rgbs, labels = [], []
    for _ in range(batch):
        rgb, lab = scenes[int(rng.integers(len(scenes)))]
        y = int(rng.integers(0, lab.shape[0] - patch + 1))
        x = int(rng.integers(0, lab.shape[1] - patch + 1))
        rgbs.append(rgb[:, y : y + patch, x : x + patch])
        labels.append(lab[y : y + patch, x : x + patch])
    return np.stack(rgbs), np.stack(labels)


@torch.no_grad()
def predict(
    model: L2HNet,
    rgb: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[int] = CLASSES,
    chunk: int = 512,
) -> np.ndarray:
    """Classify a ``(3, H, W)`` uint8 scene into legend codes ``(H, W)`` uint8.

    Runs in eval mode over ``chunk``² tiles read with a halo of the network's receptive
    radius, which gives exactly the whole-scene result at a fraction of the memory.
    """
    model.eval()
    device = next(model.parameters()).device
    codes = np.asarray(classes, np.uint8)
    _, h, w = rgb.shape
    halo = model.receptive_radius
    out = np.empty((h, w), np.uint8)
    for y0 in range(0, h, chunk):
        for x0 in range(0, w, chunk):
            y1, x1 = min(h, y0 + chunk), min(w, x0 + chunk)
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            tile = rgb[:, ya : min(h, y1 + halo), xa : min(w, x1 + halo)]
            logits = model(normalise(tile, mean, std)[None].to(device))[0]
            best = logits.argmax(dim=0).cpu().numpy()
            out[y0:y1, x0:x1] = codes[best[y0 - ya : y1 - ya, x0 - xa : x1 - xa]]
    return out


def overall_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of labelled (non-zero) pixels where ``pred`` equals ``labels``."""
    valid = labels != 0
    return float((pred[valid] == labels[valid]).mean())


def class_recall(pred: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Per-class recall (producer's accuracy) for the classes the generator emits."""
    return {
        code: float((pred[labels == code] == code).mean()) for code in CLASSES_USED if (labels == code).any()
    }


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``(N, C, H, W)`` logits against ``(N, H, W)`` channel indices.

    Written with a one-hot product instead of ``nll_loss`` because CUDA's 2-D NLL kernel
    has no deterministic implementation, and training must be reproducible.
    """
    one_hot = nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)
    return -(nn.functional.log_softmax(logits, dim=1) * one_hot).sum(dim=1).mean()


def train(
    steps: int,
    width: int,
    seed: int,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[L2HNet, ModelSpec]:
    """Fit an L2HNet of ``width`` on crops of the training scenes for ``steps`` Adam steps.

    Seeded and with deterministic kernels, so the same seed, device and torch build give
    the same weights.  Returns the model (on ``device``, in eval mode) and its spec.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    scenes = [make_scene(TRAIN_SIZE, TRAIN_SIZE, s) for s in TRAIN_SEEDS]
    mean, std = band_stats([rgb for rgb, _ in scenes])
    log(f"training scenes {TRAIN_SEEDS} ({TRAIN_SIZE}²); mean {mean}, std {std}")
    model = L2HNet(bands=3, classes=len(CLASSES), width=width).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.05
    )
    model.train()
    t0, running = time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        rgb, lab = sample_batch(rng, scenes)
        target = torch.from_numpy(lab.astype(np.int64) - 1).to(device)
        loss = cross_entropy(model(normalise(rgb, mean, std).to(device)), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        if step % 50 == 0 or step == steps:
            n = 50 if step % 50 == 0 else step % 50
            log(f"step {step}/{steps} loss {running / n:.4f} ({time.perf_counter() - t0:.0f} s)")
            running = 0.0
    spec = ModelSpec(
        arch="l2hnet",
        width=width,
        bands=("red", "green", "blue"),
        classes=CLASSES,
        mean=mean,
        std=std,
        resolution_m=1.0,
        description=(
            f"L2HNet trained on the sinolc-dist synthetic demo generator, seed {seed}, "
            f"steps {steps}, scenes {list(TRAIN_SEEDS)} at {TRAIN_SIZE} px, "
            f"{BATCH} x {PATCH}² crops per step, on {torch.device(device).type}"
        ),
    )
    return model.eval(), spec


def evaluate(
    model: L2HNet, spec: ModelSpec, seeds: Sequence[int], size: int, log: Callable[[str], None]
) -> dict[int, float]:
    """Overall accuracy on held-out ``size``² scenes per seed (logging per-class recall)."""
    results = {}
    for seed in seeds:
        rgb, labels = make_scene(size, size, seed)
        pred = predict(model, rgb, spec.mean, spec.std, spec.classes)
        results[seed] = overall_accuracy(pred, labels)
        recall = ", ".join(f"{c}: {r:.3f}" for c, r in class_recall(pred, labels).items())
        log(f"held-out seed {seed} ({size}²): OA {results[seed]:.4f}; recall {recall}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: train, evaluate on held-out seeds, save the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_CHECKPOINT, help="checkpoint path")
    parser.add_argument(
        "--steps",
        type=int,
        default=1500,
        help="Adam steps (default 1500, as shipped)",
    )
    parser.add_argument("--width", type=int, default=64, help="L2HNet width (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, spec = train(args.steps, args.width, args.seed, args.device)
    scores = evaluate(model, spec, EVAL_SEEDS, EVAL_SIZE, print)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, model, spec)
    size_mb = args.out.stat().st_size / 1e6
    print(
        f"saved {args.out} ({size_mb:.2f} MB); mean held-out OA "
        f"{np.mean(list(scores.values())):.4f}; {time.perf_counter() - t0:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
