"""How a worker finds, loads and checks the model: ``ModelRef`` → ``LoadedModel``.

``ModelRef`` is plain, frozen, hashable data (it travels inside every task and
is the key of the per-worker model cache); ``load_model`` turns it into a
module on its device with the spec that describes it and the declarations that
say how chunks may be cut (exactly, by receptive radius, or by blending chips).
The default is a sinolc checkpoint (``checkpoint.py``); plug-ins are described
in ``plugins.py``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import Grid
from sinolc_dist.models.checkpoint import ModelSpec, load_checkpoint
from sinolc_dist.models.l2hnet import L2HNet
from sinolc_dist.models.paraformer import Paraformer
from sinolc_dist.models.plugins import build_plugin, declared

#: ``none``: exact (by receptive radius); ``gaussian``: Gaussian-weighted chips; ``authors``: the
#: SinoLC-1 authors' test.py weights (1 on a border of half the chips' overlap, 5 inside).
BLENDS = ("none", "gaussian", "authors")
AMPS = ("none", "bf16", "fp16")
#: Chip side for blending a model that declares none when ``patch`` is ``auto``.
DEFAULT_CHIP = 512
Pairs = tuple[tuple[str, Any], ...]


def frozen_pairs(items: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Pairs:
    """``(key, value)`` pairs sorted by key, lists turned into tuples: hashable settings.

    ``None`` (a YAML key left empty) is no pairs.
    """
    pairs = items.items() if isinstance(items, Mapping) else items or ()
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in pairs))


@dataclass(frozen=True)
class ModelRef:
    """How a worker finds and runs the model (hashable: the per-worker cache key).

    ``checkpoint``: a sinolc checkpoint or plain ``state_dict`` file (default), a
    weights file for a factory plug-in (or ``""``), or a TorchScript file.
    ``plugin``: ``None`` (the checkpoint's own architecture), ``"module:factory"``
    or ``"torchscript"`` (see ``sinolc_dist.models.plugins``); ``kwargs`` go to
    the factory.  ``overrides``: ``ModelSpec`` fields (``bands``, ``classes``,
    ``mean``, ``std``, ``width``…) that replace or supply the file's, needed for
    a plain ``state_dict`` and for plug-ins.  ``receptive_radius``,
    ``chip_size``, ``chip_stride``: declarations that take precedence over the
    module's attributes.  ``blend``: ``"gaussian"`` runs any model on
    overlapping chips (``chip_size``, else ``patch``) and blends them; chip
    models always blend (with the model's ``default_blend``, else ``gaussian``).
    ``batch``: chips forwarded at once, or ``"auto"`` (chosen per worker from
    free GPU memory; 1 on a CPU).  ``confidence``: ``run_shard`` also writes the top-1
    probability (uint8) where the output store has a ``confidence`` array.
    ``patch``: the forward-pass patch side in px, or ``"auto"`` (chosen per
    worker for its device, see ``sinolc_dist.engine.patches``).  ``compile``: wrap the
    module in ``torch.compile`` (GPU workers).
    ``kwargs`` and ``overrides`` accept a dict and are stored as sorted pairs.
    """

    checkpoint: str
    patch: int | str = "auto"
    device: str = "auto"
    amp: str = "none"
    threads: int = 0
    plugin: str | None = None
    kwargs: Pairs = ()
    overrides: Pairs = ()
    receptive_radius: int | None = None
    chip_size: int | None = None
    chip_stride: int | None = None
    blend: str = "none"
    batch: int | str = "auto"
    confidence: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", frozen_pairs(self.kwargs))
        object.__setattr__(self, "overrides", frozen_pairs(self.overrides))
        if self.amp not in AMPS:
            raise ConfigError(f"model.amp must be one of {', '.join(AMPS)}, got {self.amp!r}")
        if self.blend not in BLENDS:
            raise ConfigError(f"model.blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        check_patch(self.patch)
        if self.batch != "auto" and (isinstance(self.batch, bool) or not isinstance(self.batch, int)
                                     or self.batch < 1):
            raise ConfigError(f"model.batch must be 'auto' or a number of chips >= 1, got {self.batch!r}")

    def resolved_device(self) -> torch.device:
        """``auto`` → CUDA when available, else CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def check_patch(patch: int | str) -> None:
    """Refuse a patch setting that is neither ``auto`` nor a side of at least 16 px."""
    if patch != "auto" and (isinstance(patch, bool) or not isinstance(patch, int) or patch < 16):
        raise ConfigError(f"model.patch must be 'auto' or a side of at least 16 px, got {patch!r}")


@dataclass
class LoadedModel:
    """A model ready on its device with the spec that describes it.

    ``core``: the module's ``forward_core(x, edges)`` when it has one (a window
    in, the logits of its core out; see ``L2HNet.forward_core``), else ``None``;
    ``masks``: whether ``core`` takes a ``mask`` of valid pixels (nodata is then
    treated like the raster's edge).  ``patches``: the patch side chosen per
    chunk size when ``ref.patch`` is ``auto``; ``batches``: the chips per
    forward chosen when ``ref.batch`` is ``auto``.
    """

    module: torch.nn.Module
    spec: ModelSpec
    device: torch.device
    radius: int | None
    chip: int | None
    stride: int | None
    ref: ModelRef
    core: Callable[..., torch.Tensor] | None = None
    masks: bool = False
    default_blend: str = "gaussian"
    patches: dict[int, int] = field(default_factory=dict)
    batches: dict[int, int] = field(default_factory=dict)

    @property
    def blending(self) -> bool:
        """Whether chunks are computed by overlap blending (chip models, or asked for)."""
        return self.chip is not None or self.ref.blend != "none"

    @property
    def chip_px(self) -> int:
        """Chip side for blending: the declared chip size, else the patch size (or 512 with ``auto``)."""
        return self.chip or (DEFAULT_CHIP if self.ref.patch == "auto" else int(self.ref.patch))

    @property
    def stride_px(self) -> int:
        """Chip step for blending: the declared stride, else half a chip."""
        return self.stride or max(self.chip_px // 2, 1)

    @property
    def blend(self) -> str:
        """The chip weights: the one asked for, else the model's default (chip models always blend)."""
        return self.default_blend if self.ref.blend == "none" else self.ref.blend

    @functools.cached_property
    def lut(self) -> torch.Tensor:
        """Legend code of each output channel that may be chosen, on the model's device."""
        codes = [c for c in self.spec.channels if c is not None]
        return torch.tensor(codes, dtype=torch.uint8, device=self.device)

    @functools.cached_property
    def keep(self) -> torch.Tensor | None:
        """Indices of the channels that may be chosen; ``None`` when none is dropped."""
        kept = [i for i, c in enumerate(self.spec.channels) if c is not None]
        if len(kept) == len(self.spec.channels):
            return None
        return torch.tensor(kept, dtype=torch.long, device=self.device)

    def kept(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` ``(channels, …)`` less the dropped channels (argmax over it indexes :attr:`lut`)."""
        return scores if self.keep is None else scores.index_select(0, self.keep)


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
    """Load the model once per process (later calls return the cached model).

    Refuses a model that declares neither a receptive radius nor a chip size
    unless blending was asked for: its chunks could not be cut safely.
    """
    if ref.threads > 0:
        torch.set_num_threads(ref.threads)
    if ref.resolved_device().type == "cpu":
        keep_heap()
    if ref.plugin is None:
        ckpt = load_checkpoint(ref.checkpoint, dict(ref.overrides))
        module, spec = ckpt.build(), ckpt.spec
        del ckpt  # its state_dict is a second copy of the weights (570 MB for Paraformer)
    else:
        module, spec = build_plugin(ref.plugin, ref.checkpoint, dict(ref.kwargs), dict(ref.overrides))
    if isinstance(module, L2HNet | Paraformer):  # the same function, fewer passes over the activations
        module = module.folded()
    device = ref.resolved_device()
    # channels_last on CPU too: oneDNN's convolutions skip a layout reorder (measured 10-20 % here).
    module = module.to(device).to(memory_format=torch.channels_last)
    radius = declared(module, "receptive_radius", ref.receptive_radius)
    chip = declared(module, "chip_size", ref.chip_size)
    stride = declared(module, "chip_stride", ref.chip_stride)
    core = getattr(module, "forward_core", None)
    masks = (core is not None and bool(getattr(module, "nodata_as_edge", False))
             and "mask" in inspect.signature(core).parameters)
    if ref.compile:  # optional: fuses kernels on GPU; the first patches of each shape compile
        module = torch.compile(module)
        core = torch.compile(core) if core is not None else None
    default_blend = str(getattr(module, "default_blend", "gaussian"))
    model = LoadedModel(module, spec, device, radius, chip, stride, ref, core, masks, default_blend)
    if radius is None and not model.blending:
        raise ConfigError(
            f"model {ref.plugin or ref.checkpoint} declares neither receptive_radius nor chip_size: "
            "declare one (measure the radius with sinolc_dist.models.plugins.measure_receptive_radius), "
            "set model.receptive_radius or model.chip_size in the workflow, or set model.blend: gaussian"
        )
    if not 0 < model.stride_px <= model.chip_px:
        raise ConfigError(f"chip stride {model.stride_px} must be in 1..chip size {model.chip_px}: "
                          f"set model.chip_stride to at most {model.chip_px} in the workflow")
    return model


def check_model(ref: ModelRef, grid: Grid) -> tuple[ModelSpec, list[str]]:
    """Build the model once on this CPU, check it fits the grid; its spec and warnings. Nothing is kept.

    The driver's check before anything is written: a file that does not fit
    its architecture, a legend or halo that does not fit the model, fails here
    (the driver of a GPU cluster often has no GPU; workers load the model on
    their own device), and the driver does not hold the weights during the run.
    The warnings say where blended chunks will not equal one blended pass.
    """
    model = load_model.__wrapped__(dataclasses.replace(ref, device="cpu", compile=False))
    check_halo(grid, model)
    cut = grid.chunk < max(grid.size)  # a grid of one chunk has no chunk edges inside
    overlap = model.chip_px - model.stride_px
    warnings = []
    if model.blending and cut and (grid.halo < overlap or grid.chunk % model.stride_px):
        warnings.append(
            f"grid halo {grid.halo} px and {grid.chunk} px chunks with {model.chip_px} px chips at stride "
            f"{model.stride_px}: pixels near chunk edges will differ from one blended pass; for equality "
            f"use a workflow with grid.halo >= {overlap} and chunks a multiple of {model.stride_px} "
            "(e.g. --workflow paraformer or cn-paraformer)")
    return model.spec, warnings


def check_halo(grid: Grid, model: LoadedModel) -> None:
    """Refuse a halo smaller than the model's receptive radius (results would not be exact).

    With blending the halo is only context, so any halo is accepted (the
    driver's :func:`check_model` warns where chunk edges would then differ
    from one blended pass).
    """
    if model.blending:
        return
    radius = model.radius or 0
    if grid.halo < radius:
        raise ConfigError(
            f"grid halo {grid.halo} px is smaller than the model's receptive radius "
            f"{radius} px, so chunk edges would differ from a whole-raster pass; "
            f"set grid.halo >= {radius} in the workflow"
        )
    patch = model.ref.patch
    if patch != "auto" and grid.chunk % int(patch) and int(patch) < grid.chunk:
        sides = [str(side) for side in (256, 512, 1024, 2048) if grid.chunk % side == 0]
        raise ConfigError(
            f"model.patch {model.ref.patch} does not divide the chunk size {grid.chunk}: set model.patch "
            f"to {', '.join([*sides[:3], 'auto'])} or another divisor of {grid.chunk} of at least 16"
        )
