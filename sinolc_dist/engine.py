"""The per-chunk inference engine: chunk + halo in, uint8 classes out.

For each chunk the engine reads the chunk grown by the halo (clipped to the
grid, never padded: every layer of a whole-raster pass zero-pads its own input
at the edge, and only a clipped window reproduces that), normalises it, runs
the model on fixed-size patches laid on one global patch lattice (so every
pixel is computed by the same kernels whatever the chunking: results do not
depend on the chunk size), crops the halo, takes the argmax, maps channels to
legend codes and sets nodata pixels to 0.

One task handles one shard of the output store: it computes the shard's
planned chunks and writes the whole shard once (one writer per shard).  The
model is loaded once per worker process and cached.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from sinolc_dist import stores
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import ChunkId, Grid, Window
from sinolc_dist.models.checkpoint import ModelSpec, load_checkpoint
from sinolc_dist.state import ChunkResult


@dataclass(frozen=True)
class ModelRef:
    """How a worker finds and runs the model (hashable: the per-worker cache key)."""

    checkpoint: str
    patch: int = 512
    device: str = "auto"
    amp: str = "none"
    threads: int = 0

    def resolved_device(self) -> torch.device:
        """``auto`` → CUDA when available, else CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class LoadedModel:
    """A model ready on its device with the spec that describes it."""

    module: torch.nn.Module
    spec: ModelSpec
    device: torch.device
    radius: int
    ref: ModelRef

    @functools.cached_property
    def lut(self) -> torch.Tensor:
        """Output channel → legend code, on the model's device."""
        return torch.tensor(self.spec.classes, dtype=torch.uint8, device=self.device)


def keep_heap() -> bool:
    """Keep freed memory in the heap (glibc): large activations then reuse warm pages.

    glibc serves allocations above 32 MB with fresh ``mmap`` pages and returns
    them on free, so each forward of a 512² patch page-faults its activations
    again; measured here (2 cores, width 64) that halves the speed of 512² and
    1024² patches.  Turning ``mmap`` off for this worker keeps them warm.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


@functools.lru_cache(maxsize=2)
def load_model(ref: ModelRef) -> LoadedModel:
    """Load a checkpoint once per process (later calls return the cached model)."""
    if ref.threads > 0:
        torch.set_num_threads(ref.threads)
    if ref.resolved_device().type == "cpu":
        keep_heap()
    ckpt = load_checkpoint(ref.checkpoint)
    device = ref.resolved_device()
    module = ckpt.build().to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    radius = int(getattr(module, "receptive_radius", 0))
    return LoadedModel(module, ckpt.spec, device, radius, ref)


def check_halo(grid: Grid, model: LoadedModel) -> None:
    """Refuse a halo smaller than the model's receptive radius (results would not be exact)."""
    if grid.halo < model.radius:
        raise ConfigError(
            f"grid halo {grid.halo} px is smaller than the model's receptive radius "
            f"{model.radius} px, so chunk edges would differ from a whole-raster pass; "
            f"set grid.halo >= {model.radius} in the workflow"
        )
    if grid.chunk % model.ref.patch and model.ref.patch < grid.chunk:
        raise ConfigError(
            f"patch size {model.ref.patch} does not divide the chunk size {grid.chunk}; "
            "choose a patch that divides the chunk (e.g. 256, 512, 1024)"
        )


def normalise(image: np.ndarray, spec: ModelSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale raw bands to the model's input on ``device``; return ``(x, valid)``.

    A pixel is nodata when all its bands are 0 (or any band is NaN in float
    imagery); nodata pixels enter the network as 0 after normalisation.
    """
    if image.shape[0] != len(spec.bands):
        raise ConfigError(
            f"imagery has {image.shape[0]} bands but the model expects {len(spec.bands)} "
            f"({', '.join(spec.bands)}): ingest the matching bands or use another checkpoint"
        )
    data = torch.from_numpy(np.ascontiguousarray(image)).to(device).float()
    valid = torch.isfinite(data).all(dim=0) & (data != 0).any(dim=0)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(-1, 1, 1)
    x = (torch.nan_to_num(data) - mean) / std
    x *= valid
    return x, valid


def _patch_windows(chunk_win: Window, patch: int) -> list[Window]:
    """Patches of the global lattice (aligned to the grid origin) inside a chunk."""
    return [
        Window(r, c, min(r + patch, chunk_win.row1), min(c + patch, chunk_win.col1))
        for r in range(chunk_win.row0, chunk_win.row1, patch)
        for c in range(chunk_win.col0, chunk_win.col1, patch)
    ]


def _forward(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Run the model on one normalised patch ``(bands, h, w)``; return argmax indices."""
    t = x[None]
    t = t.contiguous(memory_format=torch.channels_last) if model.device.type == "cuda" else t.contiguous()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(model.ref.amp)
    with torch.inference_mode(), torch.autocast(
        model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
    ):
        logits = model.module(t)
    return logits[0].argmax(dim=0)


def classify_chunk(model: LoadedModel, grid: Grid, cid: ChunkId, image: np.ndarray) -> np.ndarray:
    """Classify one chunk from its halo-window imagery (``grid.halo_window(cid)``).

    A pure array function: ``image`` is ``(bands, h, w)`` over the halo window,
    the result is uint8 legend codes over the chunk window, 0 where nodata.
    Everything after the read stays on the model's device until the final codes.
    """
    chunk_win = grid.chunk_window(cid)
    halo_win = grid.halo_window(cid)
    inner = (
        slice(chunk_win.row0 - halo_win.row0, chunk_win.row1 - halo_win.row0),
        slice(chunk_win.col0 - halo_win.col0, chunk_win.col1 - halo_win.col0),
    )
    x, valid = normalise(image, model.spec, model.device)
    if not bool(valid[inner].any()):
        return np.zeros((chunk_win.height, chunk_win.width), np.uint8)
    idx = torch.zeros((chunk_win.height, chunk_win.width), dtype=torch.long, device=model.device)
    ctx = model.radius or grid.halo  # context a patch needs: the receptive radius suffices
    for p in _patch_windows(chunk_win, min(model.ref.patch, grid.chunk)):
        src = Window(p.row0 - ctx, p.col0 - ctx, p.row1 + ctx, p.col1 + ctx).intersect(halo_win)
        rows = slice(src.row0 - halo_win.row0, src.row1 - halo_win.row0)
        cols = slice(src.col0 - halo_win.col0, src.col1 - halo_win.col0)
        patch_idx = _forward(model, x[:, rows, cols])
        idx[p.row0 - chunk_win.row0:p.row1 - chunk_win.row0,
            p.col0 - chunk_win.col0:p.col1 - chunk_win.col0] = \
            patch_idx[p.row0 - src.row0:p.row1 - src.row0, p.col0 - src.col0:p.col1 - src.col0]
    codes = model.lut[idx] * valid[inner]
    return codes.cpu().numpy()


def checksum(classes: np.ndarray) -> str:
    """A short content hash of a chunk's classes, kept in the state."""
    return hashlib.blake2b(np.ascontiguousarray(classes).tobytes(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: the planned chunks of one output shard."""

    grid: Grid
    shard: ChunkId
    chunks: tuple[ChunkId, ...]
    input_path: str
    output_path: str
    model: ModelRef

    @property
    def key(self) -> str:
        """Dask task key naming every chunk (first..last of the shard's chunks)."""
        first, last = self.chunks[0], self.chunks[-1]
        names = first.key if first == last else f"{first.key}..{last.key}"
        return f"infer-{names}"


def run_shard(task: ShardTask) -> list[ChunkResult]:
    """Compute a shard's chunks and write the whole shard (runs on a worker).

    Chunk failures (bad input, model errors) are returned per chunk, so one bad
    chunk does not lose its neighbours' work; the shard is written with the
    chunks that succeeded and the earlier content of the others.
    """
    grid = task.grid
    model = load_model(task.model)
    check_halo(grid, model)
    src = stores.open_array(task.input_path, grid)
    dst = stores.open_array(task.output_path, grid)
    shard_win = grid.shard_window(task.shard)
    shard_chunks = set(grid.chunks_in(shard_win))
    if shard_chunks <= set(task.chunks):
        out = np.zeros((shard_win.height, shard_win.width), np.uint8)
    else:  # keep the other chunks' earlier results: the whole shard is rewritten
        out = stores.read_window(dst, shard_win)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    results: list[ChunkResult] = []
    with ThreadPoolExecutor(1) as reader:
        futures = [reader.submit(stores.read_window, src, grid.halo_window(c)) for c in task.chunks]
        for cid, fut in zip(task.chunks, futures, strict=True):
            t0 = time.time()
            try:
                classes = classify_chunk(model, grid, cid, fut.result())
            except Exception as exc:  # reported per chunk; the driver retries or marks failed
                results.append(ChunkResult(cid, False, worker, t0, time.time() - t0,
                                           error=f"{type(exc).__name__}: {exc}"))
                continue
            w = grid.chunk_window(cid)
            out[w.row0 - shard_win.row0:w.row1 - shard_win.row0,
                w.col0 - shard_win.col0:w.col1 - shard_win.col0] = classes
            results.append(ChunkResult(cid, True, worker, t0, time.time() - t0, checksum(classes)))
    stores.write_window(dst, shard_win, out)
    return results
