"""The SinoLC-1 authors' state_dict layouts, pinned as data, and seeded random state_dicts in them.

``data/authors_layout.json`` lists ``key -> shape`` of ``state_dict()`` of the authors' own classes
(read from their code once, outside the test suite; see its ``source``): the L2HNet backbone at
width 64 with 3 bands (151 entries) and Paraformer at width 64, 4 bands, 17 classes, 224 px chips
(382 entries).  The state_dicts built here come from that list, not from the package's modules,
so a drift in the package's key names or shapes fails the loading tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LAYOUT = json.loads((Path(__file__).parent / "data" / "authors_layout.json").read_text())
L2HNET_BACKBONE: dict[str, list[int]] = LAYOUT["l2hnet_backbone_width64_bands3"]
PARAFORMER: dict[str, list[int]] = LAYOUT["paraformer_width64_bands4_classes17_chip224"]
HEAD = {"head.weight": [11, 64, 1, 1], "head.bias": [11]}


def l2hnet_layout(classes: int = 11, downsampling: bool = False) -> dict[str, list[int]]:
    """The FCN use at width 64, 3 bands: the authors' backbone keys plus a 1×1 ``head``.

    ``downsampling`` keeps ``out_conv1..3`` (a state_dict saved from the authors' class with a
    head attached has them); without it they are left out, as a user's FCN wrapper would.
    """
    keys = {k: v for k, v in L2HNET_BACKBONE.items() if downsampling or not k.startswith("out_conv")}
    return {**keys, "head.weight": [classes, 64, 1, 1], "head.bias": [classes]}


def paraformer_layout(chip: int = 224) -> dict[str, list[int]]:
    """Paraformer's keys; ``chip`` other than 224 changes only the position embeddings ((chip/16)² tokens)."""
    layout = dict(PARAFORMER)
    layout["transformer.embeddings.position_embeddings"] = [1, (chip // 16) ** 2, 768]
    return layout


def paraformer_keys_only() -> dict[str, torch.Tensor]:
    """Paraformer's key names with empty tensors, but for the stem's and head's shapes.

    Detection reads names and the checks read those two shapes: enough for the errors of a
    Paraformer file given as another architecture, without 570 MB of weights.
    """
    return {k: torch.zeros(v if k.endswith(("startconv.weight", "head2.0.weight")) else [0])
            for k, v in PARAFORMER.items()}


def random_state_dict(layout: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights in ``layout``: scaled normal weights, BN statistics of a trained-looking network."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(100, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("running_mean"):
            out[key] = torch.rand(shape, generator=gen) - 0.5
        elif key.endswith("position_embeddings"):
            out[key] = torch.randn(shape, generator=gen) * 0.02
        elif len(shape) > 1:  # conv / linear weights, fan-in scaled
            fan_in = 1
            for n in shape[1:]:
                fan_in *= n
            out[key] = torch.randn(shape, generator=gen) / fan_in ** 0.5
        else:  # biases, norm weights
            out[key] = torch.randn(shape, generator=gen) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
    return out


def save_plain(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    """Save as the authors' training scripts do: ``torch.save(model.state_dict())``."""
    torch.save(state_dict, path)
    return path
