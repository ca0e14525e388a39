"""L2HNet: the resolution-preserving CNN behind SinoLC-1.

Stem (3×3 conv, ReLU), five RP blocks with no downsampling, and a 1×1 head.
Each RP block runs three parallel conv+BN+ReLU branches (1×1 → C, 3×3 → C/2,
5×5 → C/4), concatenates them (1.75 C), fuses back to C with a 1×1 conv+BN+ReLU
and adds its input.  The receptive field is 23×23 px (radius 11), so a halo of
11 px makes chunked inference equal to a whole-raster pass.

Besides ``forward`` the network offers what the engine needs to run windows
exactly without computing the context twice over: ``forward_core`` (each layer
computes only the pixels later layers still use) and ``folded`` (an inference
copy with every BatchNorm folded into the conv before it).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Which sides of a window lie on the raster's edge: (top, bottom, left, right).
Edges = tuple[bool, bool, bool, bool]


def _crop(x: torch.Tensor, edges: Edges, px: int) -> torch.Tensor:
    """``x`` less ``px`` pixels on each side that is not on the raster's edge (a view)."""
    if px == 0:
        return x
    top, bottom, left, right = (0 if edge else px for edge in edges)
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


def _core_conv(conv: nn.Conv2d, x: torch.Tensor, edges: Edges, shrink: int) -> torch.Tensor:
    """``conv`` over ``x`` keeping what is exact: inner sides lose ``shrink`` px, edge sides none.

    An inner window (no side on the raster's edge) takes the unpadded conv and
    crops what it has left to lose; a window on the edge takes the zero-padded
    conv, as a whole-raster pass does there, and crops its inner sides.
    """
    radius = conv.kernel_size[0] // 2
    if any(edges):
        return _crop(F.conv2d(x, conv.weight, conv.bias, padding=radius), edges, shrink)
    return _crop(F.conv2d(x, conv.weight, conv.bias), edges, shrink - radius)


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _core_branch(branch: nn.Sequential, x: torch.Tensor, edges: Edges, shrink: int) -> torch.Tensor:
    """A conv+BN+ReLU branch through :func:`_core_conv`."""
    conv, norm, relu = branch
    return relu(norm(_core_conv(conv, x, edges, shrink)))


class RPBlock(nn.Module):
    """One resolution-preserving block: three branches, fuse, residual."""

    kernels = (1, 3, 5)
    radius = max(kernels) // 2

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

    def forward_core(self, x: torch.Tensor, edges: Edges) -> torch.Tensor:
        """Apply the block to a window; sides not on the raster's edge lose 2 px."""
        y = torch.cat([_core_branch(b, x, edges, self.radius)
                       for b in (self.branch1, self.branch3, self.branch5)], dim=1)
        return self.fuse(y) + _crop(x, edges, self.radius)


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
        return self.stem_kernel // 2 + self.n_blocks * RPBlock.radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, bands, H, W)`` normalised imagery to ``(N, classes, H, W)`` logits."""
        return self.head(self.blocks(self.stem(x)))

    def forward_core(self, x: torch.Tensor, edges: Edges) -> torch.Tensor:
        """Logits of a window less the receptive radius on each side not on the raster's edge.

        Equal to ``forward`` over the whole raster, cropped, for any window that
        carries the receptive radius of context on its inner sides (sides on the
        raster's edge are zero-padded layer by layer, as the whole-raster pass
        does).  Each layer computes only what later layers still use, so a 256²
        core with its 11 px of context costs about 264² per layer, not 278².
        """
        conv, relu = self.stem
        y = relu(_core_conv(conv, x, edges, self.stem_kernel // 2))
        for block in self.blocks:
            y = block.forward_core(y, edges)
        return self.head(y)

    def folded(self) -> L2HNet:
        """An inference copy with each BatchNorm folded into the conv before it (eval statistics).

        The same function up to float rounding (about 1e-6 in the logits) with a
        fifth fewer passes over the activations: the engine runs this copy.
        """
        model = copy.deepcopy(self).eval()
        for seq in model.modules():
            if isinstance(seq, nn.Sequential):
                for i in range(len(seq) - 1):
                    if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                        seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
        return model
