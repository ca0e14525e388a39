"""The architectures that ship, and how a state_dict is matched to one.

A state_dict saved from the SinoLC-1 authors' classes (``torch.save(model.state_dict())``)
carries its sizes in its shapes: the input bands and the width in the stem's weight,
the output channels in the head's, Paraformer's chip side in its position embeddings.
:func:`build` reads them, refuses a file that does not fit what the user asked for
with the flag that fixes it (``--arch``, ``--width``, ``--override``), and loads the
weights strictly into a module built from the package (``l2hnet.py``, ``paraformer.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sinolc_dist.errors import CheckpointError
from sinolc_dist.models.l2hnet import L2HNet
from sinolc_dist.models.paraformer import HEADS, TOKEN_PX, Paraformer

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Sizes:
    """What a state_dict's shapes say: input bands, width, output channels, other constructor arguments."""

    bands: int
    width: int
    outputs: int
    extra: tuple[tuple[str, int | bool], ...] = ()


@dataclass(frozen=True)
class Architecture:
    """A shipped network: its stem and head keys, how to read its sizes and how to build it.

    ``keys`` describes its state_dict in errors.
    """

    keys: str
    stem: str
    head: str
    read_extra: Callable[[StateDict], dict[str, int | bool]]
    make: Callable[..., nn.Module]

    def sizes(self, state_dict: StateDict) -> Sizes:
        """The sizes of a state_dict of this architecture (its stem and head must be there)."""
        width, bands = state_dict[self.stem].shape[:2]
        outputs = state_dict[self.head].shape[0]
        return Sizes(int(bands), int(width), int(outputs), tuple(sorted(self.read_extra(state_dict).items())))


def _l2hnet_extra(state_dict: StateDict) -> dict[str, int | bool]:
    return {"downsampling": "out_conv1.0.weight" in state_dict}


def _paraformer_extra(state_dict: StateDict) -> dict[str, int | bool]:
    _, tokens, hidden = state_dict["transformer.embeddings.position_embeddings"].shape
    layers = {k.split(".")[3] for k in state_dict if k.startswith("transformer.encoder.layer.")}
    mlp = state_dict["transformer.encoder.layer.0.ffn.fc1.weight"].shape[0] if layers else 4 * hidden
    return {"chip": math.isqrt(int(tokens)) * TOKEN_PX, "hidden": int(hidden), "layers": len(layers),
            "heads": HEADS, "mlp": int(mlp)}


ARCHITECTURES: dict[str, Architecture] = {
    "l2hnet": Architecture("an L2HNet state_dict (startconv.*, rpblocks.*)", "startconv.weight",
                           "head.weight", _l2hnet_extra, L2HNet),
    "paraformer": Architecture("a Paraformer state_dict (transformer.*, decoder.*, segmentation_head1/2.*)",
                               "transformer.embeddings.hybrid_model.startconv.weight",
                               "segmentation_head2.0.weight", _paraformer_extra, Paraformer),
}


def detect(state_dict: StateDict) -> str | None:
    """The shipped architecture a state_dict's keys belong to (the one whose stem it holds), if any."""
    return next((name for name, arch in ARCHITECTURES.items() if arch.stem in state_dict), None)


def check_arch(name: str) -> None:
    """Refuse an architecture name that does not ship."""
    if name not in ARCHITECTURES:
        raise CheckpointError(f"unknown --arch {name!r}; known: {', '.join(ARCHITECTURES)} "
                              "(or give the network as --plugin package.module:factory)")


def build(arch: str, state_dict: StateDict, what: str, width: int | None, bands: int,
          channels: int) -> nn.Module:
    """The ``arch`` network for ``state_dict``, weights loaded strictly, in eval mode.

    ``what`` names the file in errors; ``width`` (``None``: the file's),
    ``bands`` and ``channels`` are what the spec says, checked against the
    file's shapes first so that each mismatch names the flag that fixes it.
    """
    check_arch(arch)
    found = detect(state_dict)
    if found is None and "stem.0.weight" in state_dict:
        raise CheckpointError(f"{what} is sinolc-dist 0.1's own L2HNet variant (stem.*, blocks.*: a ReLU "
                              "after the stem, convs without bias), which is not the authors' network and no "
                              "longer loads: retrain it with the authors' layout (python -m "
                              "sinolc_dist.demo.train)")
    if found is None:
        stems = " or ".join(a.stem for a in ARCHITECTURES.values())
        raise CheckpointError(f"{what} is neither an L2HNet nor a Paraformer state_dict (no {stems}): "
                              "give the network as --plugin package.module:factory")
    if found != arch:
        raise CheckpointError(f"{what} is {ARCHITECTURES[found].keys}, not {arch}: use --arch {found}")
    spec = ARCHITECTURES[arch]
    if spec.head not in state_dict:
        raise CheckpointError(_missing_head(arch, what))
    sizes = spec.sizes(state_dict)
    stem = f"{spec.stem} is {tuple(state_dict[spec.stem].shape)}"
    if width is not None and width != sizes.width:
        raise CheckpointError(f"{what} has width {sizes.width} ({stem}), not {width}: "
                              f"use --width {sizes.width}")
    if bands != sizes.bands:
        raise CheckpointError(
            f"{what} takes {sizes.bands} input bands ({stem}) but the model spec has {bands}: give "
            f"--override bands=[...] mean=[...] std=[...] with {sizes.bands} values each, in the file's "
            "band order")
    if channels != sizes.outputs:
        raise CheckpointError(
            f"{what} has {sizes.outputs} output channels ({spec.head} is "
            f"{tuple(state_dict[spec.head].shape)}) "
            f"but the legend gives {channels} class codes: give one code per channel, e.g. "
            f"--override classes=[drop,1,2,...] (drop: a channel never chosen) or legend=chesapeake|FILE")
    model = spec.make(bands=sizes.bands, classes=sizes.outputs, width=sizes.width, **dict(sizes.extra))
    load_weights(model, state_dict, f"{what} does not fit {arch} width {sizes.width}",
                 f"it is not a state_dict of the authors' {arch}: check --arch or the file")
    return model.eval()


def _missing_head(arch: str, what: str) -> str:
    if arch == "l2hnet":
        return (f"{what} holds the L2HNet backbone without a classification head (no head.weight): the "
                "authors' L2HNet class has none; the FCN use adds a 1×1 conv named 'head' (width → classes) "
                "and trains it. A Paraformer state_dict needs --arch paraformer")
    return (f"{what} has no segmentation_head2 (the ViT branch's head): it is not a complete Paraformer "
            "state_dict")


def load_weights(model: nn.Module, state_dict: StateDict, what: str,
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
