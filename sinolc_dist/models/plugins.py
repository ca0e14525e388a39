"""Plug-in models: any ``torch.nn.Module`` factory or a TorchScript file.

Besides the sinolc checkpoint format (``checkpoint.py``), the engine runs two
kinds of plug-in, named by ``ModelRef.plugin``:

``"package.module:factory"``
    ``factory(**ModelRef.kwargs)`` is imported on the worker and must return a
    ``torch.nn.Module``.  When ``ModelRef.checkpoint`` names a file (a sinolc
    checkpoint or a plain ``state_dict``), its weights are loaded strictly into
    the module (a mismatch lists the missing/unexpected keys); with an empty
    ``checkpoint`` the factory returns a ready, trained module.
``"torchscript"``
    ``ModelRef.checkpoint`` is a TorchScript file (``torch.jit.save``), loaded
    with ``torch.jit.load``.  Load only files you trust.

Contract, for both kinds:

* input ``(N, bands, H, W)`` float32, normalised per band as
  ``(value - mean) / std`` from the 0..255 scale, nodata pixels set to 0;
  output ``(N, classes, H, W)`` logits (softmax is applied by the engine;
  chips come in batches of ``ModelRef.batch``);
* the spec (``bands``, ``classes`` as legend codes of the output channels,
  ``drop`` for a channel never chosen, ``mean``, ``std``, ``legend``) comes
  from the checkpoint file when it is a sinolc checkpoint, else from
  ``ModelRef.overrides`` (``ModelSpec`` fields);
* the model declares how it may be cut, either as attributes of the module or
  as the ``ModelRef`` fields of the same names (which take precedence):

  - ``receptive_radius: int``: fully convolutional, each output pixel depends
    on at most this many pixels each side.  Chunks are then computed exactly
    (equal to a whole-raster pass) and the grid's halo must be at least it.
  - ``chip_size: int`` (optional ``chip_stride``, default ``chip_size // 2``):
    run the model on ``chip_size`` px chips with overlap, blended with Gaussian
    or the SinoLC-1 authors' weights (``ModelRef.blend``, ``sinolc_dist.engine.blend``).
    A chip model may set ``default_blend`` (``gaussian`` or ``authors``) for
    when the workflow asks none.  A model without ``receptive_radius`` is taken
    to need exactly ``chip_size`` px: a chip clipped by the raster's edge is
    zero-padded for it.  For chunked results equal to one blended pass, make the grid's halo
    at least ``chip_size - chip_stride`` and the chunk a multiple of the
    stride: every chip then fits the halo window unshifted (near the raster's
    edge too when the raster is a multiple of the chunk; else give a halo of
    ``chip_size - 1``).

  A model that declares neither is refused unless ``ModelRef.blend`` asks
  for blending.  :func:`measure_receptive_radius` measures the radius of a
  fully convolutional module once, offline (it is never measured at run time:
  the measurement costs a forward pass and could be fooled by dead units).

* optionally, a fully convolutional module may offer ``forward_core(x, edges)``
  (see ``L2HNet.forward_core``): given a window carrying ``receptive_radius``
  px of context on each side not on the raster's edge (``edges``: top, bottom,
  left, right flags), return the logits of the window less that context on
  those sides, computing each layer only where later layers still need it.
  The engine then uses it instead of ``forward`` plus a crop.  A module that
  also sets ``nodata_as_edge = True`` and takes ``forward_core(x, edges,
  mask=None)`` gets the valid pixels as a bool ``(1, 1, h, w)`` mask wherever
  the window holds nodata, and should treat them as the raster's edge (zeros
  into every spatial layer outside them, as ``L2HNet`` does); otherwise nodata
  enters it as 0.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sinolc_dist.errors import CheckpointError, ConfigError
from sinolc_dist.models.archs import load_weights
from sinolc_dist.models.checkpoint import PLUGIN_ARCH, ModelSpec, load_checkpoint, one_line

TORCHSCRIPT = "torchscript"


def import_factory(path: str) -> Any:
    """Resolve ``"package.module:factory"`` to the callable it names."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"plug-in {path!r} is not of the form 'package.module:factory' or 'torchscript'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"plug-in module {module_name!r} cannot be imported ({exc}); "
                          "install it on every worker or fix the path") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"plug-in module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"plug-in {path!r} is not callable")
    return obj


def build_plugin(
    plugin: str, checkpoint: str, kwargs: Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[nn.Module, ModelSpec]:
    """Build a plug-in model on the CPU in eval mode, with the spec that describes it."""
    spec_fields = {**overrides, "arch": PLUGIN_ARCH}
    if plugin == TORCHSCRIPT:
        try:
            module = torch.jit.load(checkpoint, map_location="cpu")
        except Exception as exc:
            raise CheckpointError(f"TorchScript file {checkpoint!r} cannot be loaded "
                                  f"({type(exc).__name__}: {one_line(str(exc))})") from None
        return module.eval(), _spec(spec_fields)
    module = import_factory(plugin)(**kwargs)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"plug-in factory {plugin!r} returned a {type(module).__name__}, "
                          "not a torch.nn.Module")
    if not checkpoint:
        return module.eval(), _spec(spec_fields)
    ckpt = load_checkpoint(checkpoint, spec_fields)
    load_weights(module, ckpt.state_dict, f"checkpoint {ckpt.path} does not fit plug-in {plugin}")
    return module.eval(), ckpt.spec


def _spec(fields: dict[str, Any]) -> ModelSpec:
    for key in ("bands", "classes", "mean", "std"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return ModelSpec(**fields)


def declared(module: nn.Module, name: str, given: int | None) -> int | None:
    """One declaration (``receptive_radius``, ``chip_size`` or ``chip_stride``) of a model.

    The value given in ``ModelRef`` wins, else the module's attribute of that
    name, else ``None`` (undeclared).
    """
    if given is not None:
        return int(given)
    value = getattr(module, name, None)
    return None if value is None else int(value)


def measure_receptive_radius(module: nn.Module, bands: int, size: int = 65, trials: int = 3) -> int:
    """Receptive radius of a fully convolutional module by the one-pixel perturbation test.

    Runs the module on a random ``size``² input, changes the centre pixel (all
    bands) and returns the largest Chebyshev distance from the centre at which
    any output changed; repeated over ``trials`` random inputs (a dead ReLU
    could hide the outermost ring in one of them).  Raises ``ValueError`` when
    the change reaches the border (the field is at least ``size // 2``: the
    model is not fully convolutional at this size; declare ``chip_size``).
    """
    gen = torch.Generator().manual_seed(0)
    centre = size // 2
    was_training = module.training
    module.eval()
    radius = 0
    try:
        with torch.inference_mode():
            for _ in range(trials):
                x = torch.randn((1, bands, size, size), generator=gen)
                y = module(x)
                x[0, :, centre, centre] += 10 * torch.randn(bands, generator=gen).sign()
                changed = (module(x) != y).any(dim=1)[0]
                if changed.shape != (size, size):
                    raise ValueError(f"output {tuple(changed.shape)} is not the input's size: "
                                     "not a resolution-preserving module")
                rows, cols = torch.nonzero(changed, as_tuple=True)
                if rows.numel():
                    d = torch.maximum((rows - centre).abs(), (cols - centre).abs()).max()
                    radius = max(radius, int(d))
    finally:
        module.train(was_training)
    if radius >= centre:
        raise ValueError(f"a one-pixel change reached the border of a {size}² input: the receptive "
                         f"radius is at least {centre}; use a larger size or declare chip_size")
    return radius
