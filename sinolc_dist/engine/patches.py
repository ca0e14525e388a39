"""Patches: how the engine cuts a chunk for the network, and how large the pieces are.

The network runs on fixed-size patches laid on one global lattice (aligned to
the grid origin), each grown by the receptive radius of context, so every
pixel is computed by the same kernels whatever the chunking.  A model with a
``forward_core(x, edges)`` method (L2HNet) computes a patch's context only as
far as later layers still need it; any other model runs its plain forward over
the grown patch, which is then cropped.

Chip models (and blending) forward ``model.batch`` chips at once, or with
``auto`` as many as fit half the free GPU memory (:func:`chip_batch`).

The patch size is the workflow's ``model.patch``, or with ``auto`` it is chosen
once per worker and chunk size: on a GPU the largest lattice patch whose
activations fit half of the free device memory (measured by one probe
forward); on a CPU the fastest per pixel in a short timed calibration, since
there cache size, not memory, decides (smaller patches are often faster).
Class maps do not depend on the patch size; float32 logits do, by about 1e-6.
Each choice is logged and, on a Dask worker, sent as an event on
:data:`ENGINE_TOPIC`, which the driver copies into its log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from distributed import get_worker

from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import Window
from sinolc_dist.models.loader import LoadedModel

log = logging.getLogger("sinolc_dist.engine.inference")

#: Dask event topic of the workers' engine messages (the patch each one chose).
ENGINE_TOPIC = "sinolc-engine"
#: Patch sides tried on a CPU (larger ones are slower per pixel there).
CPU_MAX_PATCH = 512
#: Patch side of the GPU memory probe.
PROBE_PATCH = 256
#: Share of the free GPU memory a patch's activations may take.
GPU_MEMORY_SHARE = 0.5
#: Seconds of timed forwards per candidate and round in the CPU calibration.
CALIBRATION_SECONDS = 0.2
#: Rounds over all candidates (the best of each counts: a busy moment does not decide).
CALIBRATION_ROUNDS = 3
#: Most chips per forward that ``batch: auto`` chooses on a GPU.
MAX_CHIP_BATCH = 64


def lattice(chunk_win: Window, patch: int) -> list[Window]:
    """Patches of the global lattice (aligned to the grid origin) inside a chunk."""
    return [
        Window(r, c, min(r + patch, chunk_win.row1), min(c + patch, chunk_win.col1))
        for r in range(chunk_win.row0, chunk_win.row1, patch)
        for c in range(chunk_win.col0, chunk_win.col1, patch)
    ]


def _autocast(model: LoadedModel) -> torch.autocast:
    """Mixed precision as ``model.amp`` asks, on a GPU only (a CPU worker of that workflow runs float32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(model.ref.amp)
    on = dtype is not None and model.device.type == "cuda"
    return torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=on)


def forward(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """The model's plain forward: normalised windows ``(n, bands, h, w)`` → logits ``(n, classes, h, w)``."""
    t = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), _autocast(model):
        logits = model.module(t)
    _check_shape(model, logits, x.shape[2:], t.shape, n=x.shape[0])
    return logits


def _check_shape(model: LoadedModel, logits: torch.Tensor, hw: tuple[int, ...], given: tuple[int, ...],
                 rule: str = "same height and width", n: int = 1) -> None:
    """Refuse logits that are not one channel per class over the expected height and width."""
    expected = (n, len(model.spec.channels), *hw)
    if tuple(logits.shape) != expected:
        raise ConfigError(f"model returned {tuple(logits.shape)} for an input {tuple(given)}; "
                          f"expected {expected} (one channel per class, {rule})")


def patch_logits(model: LoadedModel, x: torch.Tensor, x_win: Window, patch: Window,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``(classes, h, w)`` over ``patch``, computed from its receptive radius of context.

    ``x`` is the normalised imagery over ``x_win`` (a chunk's halo window,
    clipped only by the raster, so a side with less context than the radius
    lies on the raster's edge and is zero-padded like a whole-raster pass).
    ``valid`` (over ``x_win``; ``None``: all valid) goes to a model that treats
    nodata like the raster's edge (``LoadedModel.masks``).
    """
    ctx = model.radius or 0
    src = patch.grow(ctx).intersect(x_win)
    rows, cols = src.within(x_win)
    window = x[:, rows, cols]
    top, bottom = patch.row0 - src.row0, src.row1 - patch.row1
    left, right = patch.col0 - src.col0, src.col1 - patch.col1
    if model.core is None:
        logits = forward(model, window[None])[0]
    else:
        edges = (top < ctx, bottom < ctx, left < ctx, right < ctx)
        t = window[None].contiguous(memory_format=torch.channels_last)
        mask = None if valid is None or not model.masks else valid[None, None, rows, cols]
        with torch.inference_mode(), _autocast(model):
            core = model.core(t, edges) if mask is None else model.core(t, edges, mask=mask)
        # Inner sides came back without their context; edge sides still carry theirs.
        margins = (top, bottom, left, right)
        top, bottom, left, right = (m if e else 0 for m, e in zip(margins, edges, strict=True))
        _check_shape(model, core, (patch.height + top + bottom, patch.width + left + right), t.shape,
                     "from forward_core: the window less the receptive radius on sides not at the edge")
        logits = core[0]
    h, w = logits.shape[-2:]
    return logits[:, top:h - bottom, left:w - right]


def candidates(chunk: int) -> list[int]:
    """Patch sides that tile a chunk exactly: its divisors that are multiples of 64 (or the chunk)."""
    return [p for p in range(64, chunk + 1, 64) if chunk % p == 0] or [chunk]


def largest_fitting(sides: list[int], bytes_per_px: float, budget: float, radius: int) -> int:
    """The largest side whose grown patch ``(side + 2·radius)²`` fits ``budget`` bytes (else the smallest)."""
    fitting = [p for p in sides if (p + 2 * radius) ** 2 * bytes_per_px <= budget]
    return max(fitting) if fitting else min(sides)


def _random_window(model: LoadedModel, side: int) -> torch.Tensor:
    return torch.randn(len(model.spec.bands), side, side, device=model.device)


def _inner_patch(side: int, ctx: int) -> tuple[Window, Window]:
    """A patch of ``side`` with full context on every side, and the window it is read from."""
    return Window(ctx, ctx, ctx + side, ctx + side), Window(0, 0, side + 2 * ctx, side + 2 * ctx)


def _gpu_peak(model: LoadedModel, run: Callable[[], object]) -> tuple[int, int]:
    """Bytes of GPU memory ``run()`` takes at its peak beyond what was allocated, and the free bytes after."""
    torch.cuda.synchronize(model.device)
    base = torch.cuda.memory_allocated(model.device)
    torch.cuda.reset_peak_memory_stats(model.device)
    run()
    torch.cuda.synchronize(model.device)
    free, _ = torch.cuda.mem_get_info(model.device)
    return torch.cuda.max_memory_allocated(model.device) - base, free


def _gpu_patch(model: LoadedModel, sides: list[int]) -> tuple[int, str]:
    """Largest patch fitting :data:`GPU_MEMORY_SHARE` of the free memory, from one probe's peak."""
    ctx = model.radius or 0
    probe, x_win = _inner_patch(PROBE_PATCH, ctx)
    x = _random_window(model, x_win.height)
    peak, free = _gpu_peak(model, lambda: patch_logits(model, x, x_win, probe).argmax(0))
    per_px = peak / x_win.height ** 2
    side = largest_fitting(sides, per_px, GPU_MEMORY_SHARE * free, ctx)
    return side, f"{per_px:.0f} B/px measured, {free / 2**30:.1f} GiB free"


def _patch_speed(model: LoadedModel, side: int, seconds: float) -> float:
    """Output pixels/s of inner patches of ``side`` over about ``seconds`` (after one warm-up)."""
    patch, x_win = _inner_patch(side, model.radius or 0)
    x = _random_window(model, x_win.height)
    patch_logits(model, x, x_win, patch).argmax(0)
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        patch_logits(model, x, x_win, patch).argmax(0)
        n += 1
    return n * side * side / (time.perf_counter() - t0)


def _cpu_patch(model: LoadedModel, sides: list[int]) -> tuple[int, str]:
    """Fastest patch per output pixel among the sides up to :data:`CPU_MAX_PATCH`, timed here."""
    tried = [p for p in sides if p <= CPU_MAX_PATCH] or [min(sides)]
    speeds = dict.fromkeys(tried, 0.0)
    for _ in range(CALIBRATION_ROUNDS):
        for side in tried:
            speeds[side] = max(speeds[side], _patch_speed(model, side, CALIBRATION_SECONDS))
    best = max(speeds, key=lambda s: speeds[s])
    return best, "calibrated: " + ", ".join(f"{s}: {v:,.0f} px/s" for s, v in speeds.items())


def patch_size(model: LoadedModel, chunk: int) -> int:
    """The patch side for chunks of ``chunk`` px: the workflow's, or chosen for this device (``auto``).

    Chosen once per worker and chunk size (cached on the model) and logged.
    """
    if model.ref.patch != "auto":
        return min(int(model.ref.patch), chunk)
    if chunk not in model.patches:
        sides = candidates(chunk)
        side, why = (_gpu_patch if model.device.type == "cuda" else _cpu_patch)(model, sides)
        _announce(f"patch {side} px for {chunk} px chunks on {model.device} ({why})")
        model.patches[chunk] = side
    return model.patches[chunk]


def _announce(message: str) -> None:
    """Log ``message`` here and, on a Dask worker, send it to the driver as an engine event."""
    log.info(message)
    try:
        worker = get_worker()
    except ValueError:  # not on a worker (tests, benchmarks, a direct call)
        return
    worker.log_event(ENGINE_TOPIC, f"{worker.name}: {message}")


def chip_batch(model: LoadedModel) -> int:
    """Chips per forward for blending: the workflow's ``model.batch``, or chosen for this device (``auto``).

    On a GPU, the most chips (up to :data:`MAX_CHIP_BATCH`) whose activations
    fit :data:`GPU_MEMORY_SHARE` of the free memory, from one probe chip's
    peak; chosen once per worker and logged.  On a CPU one chip at a time:
    measured here, batching Paraformer chips gave no speed (2.26 s per chip in
    fours, 2.15 s alone).
    """
    if model.ref.batch != "auto":
        return int(model.ref.batch)
    if model.device.type != "cuda":
        return 1
    chip = model.chip_px
    if chip not in model.batches:
        x = _random_window(model, chip)[None]
        peak, free = _gpu_peak(model, lambda: forward(model, x).softmax(1))
        batch = max(1, min(MAX_CHIP_BATCH, int(GPU_MEMORY_SHARE * free // max(peak, 1))))
        _announce(f"batch of {batch} chips of {chip} px on {model.device} "
                  f"({peak / 2**20:.0f} MiB per chip measured, {free / 2**30:.1f} GiB free)")
        model.batches[chip] = batch
    return model.batches[chip]
