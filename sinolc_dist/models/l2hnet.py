"""L2HNet: the resolution-preserving CNN behind SinoLC-1.

Stem (3×3 conv, ReLU), five RP blocks with no downsampling, and a 1×1 head.
Each RP block runs three parallel conv+BN+ReLU branches (1×1 → C, 3×3 → C/2,
5×5 → C/4), concatenates them (1.75 C), fuses back to C with a 1×1 conv+BN+ReLU
and adds its input.  The receptive field is 23×23 px (radius 11), so a halo of
11 px makes chunked inference equal to a whole-raster pass.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class RPBlock(nn.Module):
    """One resolution-preserving block: three branches, fuse, residual."""

    kernels = (1, 3, 5)

    def __init__(self, width: int) -> None:
        super().__init__()
        self.branch1 = _conv_bn_relu(width, width, 1)
        self.branch3 = _conv_bn_relu(width, width // 2, 3)
        self.branch5 = _conv_bn_relu(width, width // 4, 5)
        self.fuse = _conv_bn_relu(width + width // 2 + width // 4, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; output has the input's shape."""
        y = torch.cat([self.branch1(x), self.branch3(x), self.branch5(x)], dim=1)
        return self.fuse(y) + x


class L2HNet(nn.Module):
    """L2HNet with ``width`` channels (64 "light" or 128 "normal")."""

    stem_kernel = 3
    n_blocks = 5

    def __init__(self, bands: int = 3, classes: int = 11, width: int = 64) -> None:
        super().__init__()
        if width % 4:
            raise ValueError(f"L2HNet width must be a multiple of 4, got {width}")
        self.bands, self.classes, self.width = bands, classes, width
        self.stem = nn.Sequential(
            nn.Conv2d(bands, width, self.stem_kernel, padding=self.stem_kernel // 2),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*(RPBlock(width) for _ in range(self.n_blocks)))
        self.head = nn.Conv2d(width, classes, 1)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each side that one output pixel depends on (11)."""
        return self.stem_kernel // 2 + self.n_blocks * (max(RPBlock.kernels) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, bands, H, W)`` normalised imagery to ``(N, classes, H, W)`` logits."""
        return self.head(self.blocks(self.stem(x)))
