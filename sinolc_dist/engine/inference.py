"""The per-chunk inference engine: chunk + halo in, uint8 classes out.

For each chunk the engine reads the chunk grown by the halo (clipped to the
grid, never padded: every layer of a whole-raster pass zero-pads its own input
at the edge, and only a clipped window reproduces that), normalises it, runs
the model on fixed-size patches laid on one global patch lattice (so every
pixel is computed by the same kernels whatever the chunking: results do not
depend on the chunk size), crops the halo, takes the argmax, maps channels to
legend codes (channels marked dropped are never chosen) and sets nodata
pixels to 0.  Nodata is treated like the raster's edge by models that can
(``LoadedModel.masks``: the shipped L2HNet), so a run over one GeoTIFF equals
a pass over that image alone, edges included.

Models that are not fully convolutional (plug-ins declaring ``chip_size``), or
any model when ``ModelRef.blend`` is ``"gaussian"``, are run instead on
overlapping chips, batched, blended with Gaussian or the authors' weights
(``sinolc_dist.engine.blend``); the result then equals one blended pass laid on the
same global chip lattice.  Plug-in models
(a ``module:factory`` path or a TorchScript file) are described in
``sinolc_dist.models.plugins``.

One task handles one shard of the output store: it computes the shard's
planned chunks (reading at most two chunks ahead of the one being computed)
and writes the whole shard once (one writer per shard).  The model is loaded
once per worker process and cached.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import torch
import zarr
from rasterio.io import DatasetReader

from sinolc_dist.engine.blend import blend_chunk
from sinolc_dist.engine.patches import chip_batch, forward, lattice, patch_logits, patch_size
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import ChunkId, Grid, Window
from sinolc_dist.imagery.pixels import SourceReadError
from sinolc_dist.imagery.sources import MosaicOptions, Source
from sinolc_dist.imagery.warp import fill_window
from sinolc_dist.models.checkpoint import ModelSpec
from sinolc_dist.models.loader import LoadedModel, ModelRef, check_halo, keep_heap, load_model
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.state import ChunkResult, worker_label

#: Chunk reads a shard task keeps in flight ahead of the chunk being computed.
PREFETCH = 2
T = TypeVar("T")

__all__ = [
    "LoadedModel", "ModelRef", "ShardTask", "check_halo", "checksum", "classify_chunk",
    "classify_chunk_with_confidence", "compute_shard", "keep_heap", "load_model", "normalise",
    "run_shard", "write_shard",
]


def normalise(image: np.ndarray, spec: ModelSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale raw bands to the model's input on ``device``; return ``(x, valid)``.

    Nodata is decided on the raw values: a pixel is nodata when all its bands
    are exactly 0 or any band is not finite (NaN, ±inf, or beyond float32's
    range).  The values of valid pixels are then clipped to 0..255, the scale
    the checkpoint's mean/std are defined on (a negative float becomes 0, an
    overshoot 255), so that sensor over/undershoot cannot drive the network far
    outside its training range.  Nodata pixels enter the network as 0 after
    normalisation.
    """
    if image.shape[0] != len(spec.bands):
        raise ConfigError(
            f"imagery has {image.shape[0]} bands but the model expects {len(spec.bands)} "
            f"({', '.join(spec.bands)}): ingest the matching bands or use another checkpoint"
        )
    data = torch.from_numpy(np.ascontiguousarray(image)).to(device).float()
    valid = torch.isfinite(data).all(dim=0) & (data != 0).any(dim=0)
    if image.dtype != np.uint8:
        data = torch.nan_to_num(data, nan=0.0, posinf=255.0, neginf=0.0).clamp_(0.0, 255.0)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(-1, 1, 1)
    x = (data - mean) / std
    x *= valid
    return x, valid


def _exact(model: LoadedModel, x: torch.Tensor, valid: torch.Tensor | None, chunk_win: Window,
           halo_win: Window, patch: int, confidence: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Argmax (and top-1 probability) over a chunk by patches of the global lattice.

    Each patch is computed from the receptive radius of context around it
    (clipped to the halo window), so the result equals a whole-raster pass;
    ``valid`` (``None``: no nodata in the halo window) lets the model treat
    nodata like the raster's edge.
    """
    idx = torch.zeros((chunk_win.height, chunk_win.width), dtype=torch.long, device=model.device)
    top = torch.zeros(idx.shape, dtype=torch.float32, device=model.device) if confidence else None
    for p in lattice(chunk_win, patch):
        logits = patch_logits(model, x, halo_win, p, valid)
        dst = p.within(chunk_win)
        idx[dst] = model.kept(logits).argmax(dim=0)
        if top is not None:
            top[dst] = model.kept(torch.softmax(logits.float(), dim=0)).amax(dim=0)
    return idx, top


def _classify(model: LoadedModel, grid: Grid, cid: ChunkId, image: np.ndarray,
              confidence: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Legend codes (and, if asked, uint8 confidence) of one chunk; 0 where nodata."""
    chunk_win = grid.chunk_window(cid)
    halo_win = grid.halo_window(cid)
    inner = chunk_win.within(halo_win)
    x, valid = normalise(image, model.spec, model.device)
    if not bool(valid[inner].any()):
        empty = np.zeros((chunk_win.height, chunk_win.width), np.uint8)
        return empty, empty.copy() if confidence else None
    top: torch.Tensor | None
    if model.blending:
        probs = blend_chunk(
            lambda t: torch.softmax(forward(model, t).float(), dim=1), x, chunk_win, halo_win,
            grid.full_window, model.chip_px, model.stride_px, len(model.spec.channels),
            fixed_size=model.radius is None, weights=model.blend, batch=chip_batch(model),
        )
        top, idx = model.kept(probs).max(dim=0)
    else:
        holes = None if bool(valid.all()) else valid
        idx, top = _exact(model, x, holes, chunk_win, halo_win, patch_size(model, grid.chunk), confidence)
    mask = valid[inner]
    codes = (model.lut[idx] * mask).cpu().numpy()
    if not confidence or top is None:
        return codes, None
    return codes, ((top * 255).round().to(torch.uint8) * mask).cpu().numpy()


def classify_chunk(model: LoadedModel, grid: Grid, cid: ChunkId, image: np.ndarray) -> np.ndarray:
    """Classify one chunk from its halo-window imagery (``grid.halo_window(cid)``).

    A pure array function: ``image`` is ``(bands, h, w)`` over the halo window,
    the result is uint8 legend codes over the chunk window, 0 where nodata.
    Everything after the read stays on the model's device until the final codes.
    """
    return _classify(model, grid, cid, image, confidence=False)[0]


def classify_chunk_with_confidence(
    model: LoadedModel, grid: Grid, cid: ChunkId, image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`classify_chunk` plus the top-1 softmax probability as uint8 (0..255, 0 where nodata).

    With blending the probability is the blended one.  The classes are the same
    as :func:`classify_chunk`'s.
    """
    return cast(tuple[np.ndarray, np.ndarray], _classify(model, grid, cid, image, confidence=True))


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
    #: With ``options``: read the imagery straight from these files (``run --imagery``),
    #: warped as ingest would store it, instead of from the input store.
    sources: tuple[Source, ...] = ()
    options: MosaicOptions | None = None

    @property
    def key(self) -> str:
        """Dask task key naming every chunk (first..last of the shard's chunks)."""
        return f"infer-{ChunkId.span(self.chunks)}"


def _prefetch(reader: ThreadPoolExecutor, read: Callable[[ChunkId], T],
              chunks: Iterable[ChunkId], ahead: int = PREFETCH) -> Iterator[tuple[ChunkId, Future[T]]]:
    """Yield ``(chunk, future of its read)`` with at most ``ahead`` reads beyond the current one."""
    it = iter(chunks)
    pending: deque[tuple[ChunkId, Future[T]]] = deque()
    for cid in it:
        pending.append((cid, reader.submit(read, cid)))
        if len(pending) > ahead:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


@dataclass
class ShardOutput:
    """A computed shard waiting to be written: the per-chunk results and the arrays."""

    results: list[ChunkResult]
    arrays: list[np.ndarray]  # classes, then confidence when asked for


def compute_shard(task: ShardTask) -> ShardOutput:
    """Compute a shard's chunks into whole-shard arrays (runs on a worker, on its GPU).

    Chunk failures (bad input, model errors) are returned per chunk, so one bad
    chunk does not lose its neighbours' work; chunks not computed keep the
    shard's earlier content.  Reads run in a thread at most two chunks ahead,
    overlapping the computation.
    """
    grid = task.grid
    model = load_model(task.model)
    check_halo(grid, model)
    opened: dict[str, DatasetReader] = {}  # source files stay open for the shard
    if task.options is None:
        src = stores.open_array(task.input_path, grid)

        def read(c: ChunkId) -> np.ndarray:
            return stores.read_window(src, grid.halo_window(c))
    else:
        def read(c: ChunkId) -> np.ndarray:
            return fill_window(task.sources, grid, grid.halo_window(c), task.options, opened)
    targets = _targets(task)
    shard_win = grid.shard_window(task.shard)
    if set(grid.chunks_in(shard_win)) <= set(task.chunks):
        outs = [np.zeros((shard_win.height, shard_win.width), np.uint8) for _ in targets]
    else:  # keep the other chunks' earlier results: the whole shard is rewritten
        outs = [stores.read_window(arr, shard_win) for arr in targets]
    worker = worker_label()
    results: list[ChunkResult] = []
    try:
        with ThreadPoolExecutor(1) as reader:
            for cid, fut in _prefetch(reader, read, task.chunks):
                t0 = time.time()
                try:
                    if len(targets) == 1:
                        arrays: tuple[np.ndarray, ...] = (classify_chunk(model, grid, cid, fut.result()),)
                    else:
                        arrays = classify_chunk_with_confidence(model, grid, cid, fut.result())
                except Exception as exc:  # reported per chunk; the driver retries or marks failed
                    results.append(ChunkResult(cid, False, worker, t0, time.time() - t0,
                                               error=f"{type(exc).__name__}: {exc}",
                                               deterministic=isinstance(exc, SourceReadError)))
                    continue
                w = grid.chunk_window(cid)
                for out, arr in zip(outs, arrays, strict=True):
                    out[w.within(shard_win)] = arr
                results.append(ChunkResult(cid, True, worker, t0, time.time() - t0, checksum(arrays[0])))
    finally:
        for ds in opened.values():
            ds.close()
    return ShardOutput(results, outs)


def _targets(task: ShardTask) -> list[zarr.Array]:
    """The output arrays a shard task writes: classes, and confidence when asked for and present."""
    dst = stores.open_array(task.output_path, task.grid)
    conf = stores.confidence_array(task.output_path, task.grid) if task.model.confidence else None
    return [dst] if conf is None else [dst, conf]


def write_shard(task: ShardTask, output: ShardOutput) -> list[ChunkResult]:
    """Write a computed shard whole, once (one writer per shard); returns its chunk results.

    A separate task from :func:`compute_shard`, so that a worker compresses and
    writes one shard while its GPU computes the next.
    """
    shard_win = task.grid.shard_window(task.shard)
    for arr, out in zip(_targets(task), output.arrays, strict=True):
        stores.write_window(arr, shard_win, out)
    return output.results


def run_shard(task: ShardTask) -> list[ChunkResult]:
    """Compute a shard's chunks and write the whole shard, in one call (see the two stages)."""
    return write_shard(task, compute_shard(task))
