"""Plug-in factories for the engine tests, importable as ``tests.models.plugin_factory:<name>``."""

from __future__ import annotations

import torch
from torch import nn

from sinolc_dist.models.l2hnet import L2HNet


def l2hnet(width: int = 16) -> nn.Module:
    """An untrained L2HNet (weights come from the ModelRef's checkpoint); declares radius 11."""
    return L2HNet(bands=3, classes=11, width=width)


class ChipNet(nn.Module):
    """Not fully convolutional: local 3×3 features plus a global-average-pooled branch.

    Declares ``chip_size = 64`` and records the shape of every input it sees.
    """

    chip_size = 64

    def __init__(self, classes: int = 11) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.local = nn.Conv2d(8, classes, 1)
        self.glob = nn.Linear(8, classes)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        f = self.features(x)
        return self.local(f) + self.glob(f.mean(dim=(2, 3)))[:, :, None, None]


def chip_net(seed: int = 0) -> nn.Module:
    """A ready ChipNet with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return ChipNet()


class UncroppedCore(L2HNet):
    """An L2HNet whose ``forward_core`` breaks the contract: it returns the whole window."""

    def forward_core(self, x: torch.Tensor, edges: tuple[bool, bool, bool, bool]) -> torch.Tensor:
        return self.forward(x)


def uncropped_core(width: int = 16) -> nn.Module:
    """A module whose ``forward_core`` keeps the context it should have dropped."""
    return UncroppedCore(bands=3, classes=11, width=width)
