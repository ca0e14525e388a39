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

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, TypeVar, cast

import numpy as np
import torch
import zarr
from rasterio.io import DatasetReader

from sinolc_dist.engine.blend import blend_chunk
from sinolc_dist.engine.patches import chip_batch, forward, lattice, patch_logits, patch_size
from sinolc_dist.engine.shard_task import (
    ShardWork,
    fill_shard,
    open_files,
    shard_buffers,
    tasks_by_shard,
    write_buffers,
)
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import ChunkId, Grid, Window
from sinolc_dist.imagery.sources import CompositeOptions, ImageryIndex, Source
from sinolc_dist.imagery.warp import fill_window
from sinolc_dist.models.checkpoint import ModelSpec
from sinolc_dist.models.loader import LoadedModel, ModelRef, check_halo, keep_heap, load_model
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.state import ChunkResult

#: Chunk reads a shard task keeps in flight ahead of the chunk being computed.
PREFETCH = 2
T = TypeVar("T")

__all__ = [
    "LoadedModel", "ModelRef", "ShardTask", "check_halo", "classify_chunk",
    "classify_chunk_with_confidence", "compute_shard", "keep_heap", "load_model", "normalise",
    "run_shard", "shard_tasks", "write_shard",
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


@dataclass(frozen=True)
class ShardTask(ShardWork):
    """One unit of inference work: the planned chunks of one output shard."""

    input_path: str
    output_path: str
    model: ModelRef
    #: With ``options``: read the imagery straight from these files (``run --imagery``),
    #: warped as ingest would store it, instead of from the input store.
    sources: tuple[Source, ...] = ()
    options: CompositeOptions | None = None

    stage: ClassVar[str] = "infer"


def shard_tasks(
    grid: Grid, chunks: Iterable[ChunkId], input_path: str, output_path: str, model: ModelRef,
    imagery: ImageryIndex | None = None,
) -> Iterator[ShardTask]:
    """Group chunks by output shard (one task per shard, chunks in (row, col) order).

    With ``imagery`` each task reads its chunks straight from the source files
    that meet the shard and its halo, instead of from the input store.
    """
    options = None if imagery is None else imagery.options
    return tasks_by_shard(grid, chunks, lambda sid, group, sources: ShardTask(
        grid, sid, group, input_path, output_path, model, sources, options), imagery, grid.halo)


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
    model = load_model(task.model)
    check_halo(task.grid, model)
    with open_files() as opened:  # source files stay open for the shard
        read = _reader(task, opened)
        targets = _targets(task)
        outs = shard_buffers(task, targets)
        confidence = len(targets) > 1
        with ThreadPoolExecutor(1) as reader:
            steps = ((cid, partial(_chunk_arrays, model, task.grid, cid, fut, confidence))
                     for cid, fut in _prefetch(reader, read, task.chunks))
            results = fill_shard(task, outs, steps)
    return ShardOutput(results, outs)


def _reader(task: ShardTask, opened: dict[str, DatasetReader]) -> Callable[[ChunkId], np.ndarray]:
    """How the task reads a chunk's halo window: from the input store, or from its source files."""
    grid = task.grid
    if task.options is None:
        src = stores.open_array(task.input_path, grid)
        return lambda c: stores.read_window(src, grid.halo_window(c))
    sources, options = task.sources, task.options
    return lambda c: fill_window(sources, grid, grid.halo_window(c), options, opened)


def _chunk_arrays(model: LoadedModel, grid: Grid, cid: ChunkId, image: Future[np.ndarray],
                  confidence: bool) -> tuple[np.ndarray, ...]:
    """A chunk's classes (and confidence) from its prefetched imagery."""
    if confidence:
        return classify_chunk_with_confidence(model, grid, cid, image.result())
    return (classify_chunk(model, grid, cid, image.result()),)


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
    write_buffers(task, _targets(task), output.arrays)
    return output.results


def run_shard(task: ShardTask) -> list[ChunkResult]:
    """Compute a shard's chunks and write the whole shard, in one call (see the two stages)."""
    return write_shard(task, compute_shard(task))
