"""The checkpoint file format: weights plus everything inference needs.

A checkpoint is a ``torch.save``-d dict, read back with ``weights_only=True``::

    {
      "format": "sinolc-checkpoint", "version": 1,
      "arch": "l2hnet", "width": 64,          # architecture and its size
      "bands": ["red", "green", "blue"],      # input bands, in order
      "classes": [1, 2, ..., 11],             # legend code of each output channel
      "mean": [...], "std": [...],            # per-band normalisation of 0-255 input
      "resolution_m": 1.0,                    # ground resolution it was trained at
      "description": "...",                   # free text (training data, date)
      "state_dict": {...},                    # the weights
    }

A plain ``state_dict`` file is accepted too, with the rest given by the caller
(``load_checkpoint(path, overrides)``; ``ModelRef.overrides`` in the engine).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sinolc_dist.errors import CheckpointError
from sinolc_dist.legend import LEGEND
from sinolc_dist.models.l2hnet import L2HNet

FORMAT = "sinolc-checkpoint"
VERSION = 1
ARCHITECTURES = {"l2hnet": L2HNet}
#: ``arch`` of a spec that describes a plug-in model (built by its factory, see ``plugins.py``).
PLUGIN_ARCH = "plugin"


@dataclass(frozen=True)
class ModelSpec:
    """What inference needs to know about a model besides its weights."""

    arch: str = "l2hnet"
    width: int = 64
    bands: tuple[str, ...] = ("red", "green", "blue")
    classes: tuple[int, ...] = tuple(LEGEND)
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (64.0, 64.0, 64.0)
    resolution_m: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES and self.arch != PLUGIN_ARCH:
            raise CheckpointError(
                f"unknown architecture {self.arch!r}; known: {sorted(ARCHITECTURES)} "
                "(or give the model as a plug-in)"
            )
        n = len(self.bands)
        if len(self.mean) != n or len(self.std) != n:
            raise CheckpointError(
                f"checkpoint declares {n} bands but {len(self.mean)} means and "
                f"{len(self.std)} stds: give one mean and std per band"
            )
        if any(s <= 0 for s in self.std):
            raise CheckpointError("checkpoint std values must be > 0")
        bad = [c for c in self.classes if not 1 <= int(c) <= 255]
        if bad:
            raise CheckpointError(f"class codes must be 1..255 (0 is nodata), got {bad}")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its spec, weights and the file's hash."""

    spec: ModelSpec
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    sha256: str = ""
    path: str = ""

    def build(self) -> nn.Module:
        """Instantiate the architecture and load the weights strictly (eval mode)."""
        if self.spec.arch == PLUGIN_ARCH:
            raise CheckpointError(f"checkpoint {self.path or '<memory>'} describes a plug-in model: "
                                  "build it with sinolc_dist.models.plugins.build_plugin")
        cls = ARCHITECTURES[self.spec.arch]
        model = cls(bands=len(self.spec.bands), classes=len(self.spec.classes), width=self.spec.width)
        load_weights(
            model, self.state_dict,
            f"checkpoint {self.path or '<memory>'} does not fit {self.spec.arch} "
            f"width {self.spec.width} with {len(self.spec.bands)} bands and "
            f"{len(self.spec.classes)} classes",
            "check --arch/--width or the checkpoint file",
        )
        return model.eval()


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], what: str,
                 hint: str = "check the architecture or the checkpoint file") -> None:
    """Load ``state_dict`` into ``model`` strictly, or raise naming every mismatch.

    ``what`` opens the error message; missing keys, unexpected keys and shape
    mismatches are listed (the first five of each) so that a wrong width or a
    checkpoint of another network is obvious.
    """
    own = model.state_dict()
    shape_errors = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected or shape_errors:
        raise CheckpointError(
            f"{what}: missing keys {_short(missing)}, unexpected keys {_short(unexpected)}, "
            f"shape mismatches {_short(shape_errors)}; {hint}"
        )
    model.load_state_dict(state_dict, strict=True)


def _short(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


def file_sha256(path: str | Path) -> str:
    """Hash of a file's bytes, recorded in outputs to name the weights used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec) -> None:
    """Write a checkpoint in the documented format."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "arch": spec.arch,
        "width": spec.width,
        "bands": list(spec.bands),
        "classes": [int(c) for c in spec.classes],
        "mean": [float(v) for v in spec.mean],
        "std": [float(v) for v in spec.std],
        "resolution_m": float(spec.resolution_m),
        "description": spec.description,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    torch.save(payload, Path(path))


def load_checkpoint(path: str | Path, overrides: dict[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint (documented format or plain state_dict) safely.

    ``overrides`` supplies or replaces spec fields (needed for a plain state_dict).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist: give a path to a .pt file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {p} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "it may be truncated or not a torch file: copy it again or retrain"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {p} holds a {type(payload).__name__}, not a dict")
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

