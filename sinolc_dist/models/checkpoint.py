"""The checkpoint file format: weights plus everything inference needs.

A checkpoint is a ``torch.save``-d dict, read back with ``weights_only=True``::

    {
      "format": "sinolc-checkpoint", "version": 1,
      "arch": "l2hnet", "width": 64,          # architecture (l2hnet, paraformer) and its width
      "bands": ["red", "green", "blue"],      # input bands, in order
      "classes": [1, 2, ..., 11],             # legend code of each output channel ("drop": never chosen)
      "legend": "sinolc",                     # names and colours of the codes (or a legend file)
      "mean": [...], "std": [...],            # per-band normalisation of 0-255 input
      "resolution_m": 1.0,                    # ground resolution it was trained at
      "description": "...",                   # free text (training data, date)
      "state_dict": {...},                    # the weights, in the authors' key layout
    }

A plain ``state_dict`` file (what the authors' training scripts save) is
accepted too, with the rest given by the caller (``load_checkpoint(path,
overrides)``; ``ModelRef.overrides`` in the engine): at least ``mean`` and
``std``, which no state_dict carries.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from sinolc_dist.errors import CheckpointError
from sinolc_dist.files import file_sha256
from sinolc_dist.legend import DEFAULT_LEGEND, DROP, Channels, channel_codes, load_legend
from sinolc_dist.models.archs import ARCHITECTURES, build, check_arch, detect

FORMAT = "sinolc-checkpoint"
VERSION = 1
#: ``arch`` of a spec that describes a plug-in model (built by its factory, see ``plugins.py``).
PLUGIN_ARCH = "plugin"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class ModelSpec:
    """What inference needs to know about a model besides its weights.

    ``width`` ``None``: the state_dict's.  ``classes``: the legend code of each
    output channel (``None`` for a channel never chosen, 0 for one written as
    nodata); ``None``: the legend's own channel list.  ``legend``: a shipped
    legend's name or a legend file (see ``sinolc_dist.legend``).
    """

    arch: str = "l2hnet"
    width: int | None = None
    bands: tuple[str, ...] = ("red", "green", "blue")
    classes: Channels | None = None
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (64.0, 64.0, 64.0)
    resolution_m: float = 1.0
    description: str = ""
    legend: str = DEFAULT_LEGEND

    def __post_init__(self) -> None:
        if self.arch != PLUGIN_ARCH:
            check_arch(self.arch)
        n = len(self.bands)
        if len(self.mean) != n or len(self.std) != n:
            raise CheckpointError(
                f"the model spec has {n} bands ({', '.join(self.bands)}) but {len(self.mean)} means and "
                f"{len(self.std)} stds: give one mean and std per band (--override mean=[...] std=[...])"
            )
        if any(s <= 0 for s in self.std):
            raise CheckpointError("checkpoint std values must be > 0")
        legend = load_legend(self.legend)
        classes = legend.channels if self.classes is None else channel_codes(self.classes)
        legend.check(classes)
        object.__setattr__(self, "classes", classes)

    @property
    def channels(self) -> Channels:
        """Output channel → legend code (resolved: never ``None`` as a whole)."""
        return cast(Channels, self.classes)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its spec, weights and the file's hash."""

    spec: ModelSpec
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    sha256: str = ""
    path: str = ""

    def build(self) -> nn.Module:
        """Instantiate the architecture and load the weights strictly (eval mode)."""
        what = f"checkpoint {self.path or '<memory>'}"
        if self.spec.arch == PLUGIN_ARCH:
            raise CheckpointError(f"{what} describes a plug-in model: "
                                  "build it with sinolc_dist.models.plugins.build_plugin")
        return build(self.spec.arch, self.state_dict, what, self.spec.width, len(self.spec.bands),
                     len(self.spec.channels))


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec) -> None:
    """Write a checkpoint in the documented format."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "arch": spec.arch,
        "width": spec.width,
        "bands": list(spec.bands),
        "classes": [DROP if c is None else int(c) for c in spec.channels],
        "legend": spec.legend,
        "mean": [float(v) for v in spec.mean],
        "std": [float(v) for v in spec.std],
        "resolution_m": float(spec.resolution_m),
        "description": spec.description,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    torch.save(payload, Path(path))


def one_line(text: str) -> str:
    """A library's error text as one plain line (ANSI escapes and line breaks out), for a one-line error."""
    return " ".join(_ANSI.sub("", text).split())


def _pickled_code(p: Path, said: str) -> list[str]:
    """The classes and functions a pickle in ``p`` would import and run (read from its opcodes, not run).

    The one torch's refusal quotes comes first; a zip checkpoint's others follow.
    """
    quoted = re.findall(r"GLOBAL ([\w.]+) was not an allowed global", said)
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except Exception:  # a legacy (non-zip) file: only the name torch quotes
        found = []
    return quoted + [name for name in found if name not in quoted]


def _unreadable(p: Path, exc: Exception) -> CheckpointError:
    """Why ``torch.load(weights_only=True)`` refused ``p``, without torch's advice to turn the check off."""
    said = one_line(str(exc))
    if "Weights only load failed" in said:
        code = _pickled_code(p, said)
        if code:
            more = f" and {len(code) - 3} more" if len(code) > 3 else ""
            return CheckpointError(
                f"checkpoint {p} holds pickled code ({', '.join(code[:3])}{more}) that sinolc-dist does "
                "not run: where it was made, save the weights alone with "
                "torch.save(model.state_dict(), 'weights.pt') (or a sinolc checkpoint with "
                "sinolc_dist.models.checkpoint.save_checkpoint) and give that file")
        said = said.partition("WeightsUnpickler error: ")[2].partition(" Check the documentation")[0] or said
    reason = f"{type(exc).__name__}: {said}" if said else f"{type(exc).__name__}, {p.stat().st_size} bytes"
    return CheckpointError(f"checkpoint {p} cannot be read ({reason}); "
                           "it may be truncated or not a torch file: copy it again or retrain")


def _read(p: Path) -> dict[str, Any]:
    """The dict a checkpoint file holds, read with ``weights_only``; a clear error for anything else."""
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist: give a path to a .pt file")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the error says it all
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(p, exc) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {p} holds a {type(payload).__name__}, not a dict")
    return payload


def input_band_names(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The bands a model file takes, in order, for messages that say what imagery it needs.

    The overrides' ``bands``, else the checkpoint's, else as many as its stem's
    shape says (named ``band 1``… unless they are three: red, green, blue).
    """
    if overrides and "bands" in overrides:
        return tuple(str(b) for b in overrides["bands"])
    payload = _read(Path(path))
    if payload.get("format") == FORMAT:
        return tuple(str(b) for b in payload.get("bands") or ModelSpec.bands)
    arch = detect(payload)
    n = ARCHITECTURES[arch].sizes(payload).bands if arch else len(ModelSpec.bands)
    return ModelSpec.bands if n == len(ModelSpec.bands) else tuple(f"band {i + 1}" for i in range(n))


def input_bands(path: str | Path, overrides: dict[str, Any] | None = None) -> int:
    """How many bands a model file takes (see :func:`input_band_names`)."""
    return len(input_band_names(path, overrides))


def load_checkpoint(path: str | Path, overrides: dict[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint (documented format or plain state_dict) safely.

    ``overrides`` supplies or replaces spec fields (needed for a plain state_dict).
    """
    p = Path(path)
    payload = _read(p)
    overrides = dict(overrides or {})
    if payload.get("format") == FORMAT:
        if payload.get("version") != VERSION:
            raise CheckpointError(
                f"checkpoint {p} is format version {payload.get('version')}; "
                f"this sinolc-dist reads version {VERSION}"
            )
        fields = {k: payload[k] for k in ModelSpec.__dataclass_fields__ if k in payload}
        state = payload.get("state_dict")
    elif all(isinstance(v, torch.Tensor) for v in payload.values()):
        fields, state = {}, payload
        missing = [k for k in ("mean", "std") if k not in overrides]
        if missing:
            raise CheckpointError(
                f"checkpoint {p} is a plain state_dict, which carries no input normalisation: give "
                f"--override {' '.join(f'{k}=[...]' for k in missing)} (one value per band on the 0-255 "
                "scale, as in your training's utils.IMAGE_MEANS / IMAGE_STDS)"
            )
    else:
        raise CheckpointError(
            f"checkpoint {p} is neither a sinolc checkpoint nor a plain state_dict"
        )
    fields.update(overrides)
    for key in ("bands", "classes", "mean", "std"):
        if key in fields:
            fields[key] = tuple(fields[key])
    spec = ModelSpec(**fields)
    return Checkpoint(spec=spec, state_dict=state, sha256=file_sha256(p), path=str(p))

