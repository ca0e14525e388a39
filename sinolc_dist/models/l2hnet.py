"""L2HNet, the resolution-preserving CNN behind SinoLC-1, in its authors' layout.

Written from the layer definitions the SinoLC-1 authors publish
(``LiZhuoHong/Paraformer``, ``networks/vit_seg_modeling_L2HNet.py``): a
state_dict saved from their class loads into :class:`L2HNetBackbone` strictly,
key for key (``startconv.*``, ``rpblocks.N.branches.K.{0,1}.*``,
``rpblocks.N.fuse_conv.{0,1}.*``, ``out_conv1..3.*``).

* Stem ``startconv``: 3×3 conv, bands → C, with bias, no BatchNorm, no activation.
* Five RP blocks ``rpblocks.0..4``, no downsampling.  Each runs three parallel
  branches, conv (with bias) → BatchNorm → ReLU: 1×1 C→C, 3×3 C→C/2, 5×5 C→C/4;
  concatenates them (1.75 C); fuses back to C by a 1×1 conv (with bias) → BN →
  ReLU; then adds the block's input.
* ``out_conv1..3`` (optional here): the downsampling convs that feed Paraformer's
  transformer (weight-standardised 3×3/s2 → 640, 3×3/s2 → 1024, 5×5/s4 → 1024,
  each GroupNorm(32) + ReLU).  A fully convolutional use ignores them.

The authors' backbone has no classification head.  :class:`L2HNet` is the FCN
use: a 1×1 conv ``head`` (C → classes, with bias) on the backbone's
full-resolution features, keys ``head.weight``/``head.bias``; it accepts the
state_dict with or without ``out_conv1..3`` (loaded, then dropped by the
inference copy).  The receptive field is 23×23 px (radius 11).

Nodata is treated like the raster's edge: given a ``mask`` of valid pixels,
every convolution wider than 1×1 reads zeros outside it, as each layer of a
pass over just the valid data would zero-pad at that data's edge.  Besides
``forward`` the network offers what the engine needs to run windows exactly
without computing the context twice over: ``forward_core`` (each layer
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
#: Channels of each RP block's branches, as fractions of the width (kernel 1, 3, 5).
RATIOS = (1.0, 0.5, 0.25)
#: Channels of the first downsampling conv per RP block (the authors' ``output_chs``).
DOWN_CHANNELS = 128
BLOCKS = 5


def _crop(x: torch.Tensor, edges: Edges, px: int) -> torch.Tensor:
    """``x`` less ``px`` pixels on each side that is not on the raster's edge (a view)."""
    if px == 0:
        return x
    top, bottom, left, right = (0 if edge else px for edge in edges)
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` with zeros outside the valid pixels (``where``, so no NaN or inf can leak in)."""
    return x if mask is None else torch.where(mask, x, 0.0)


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
    """The authors' branch and fuse unit: conv with bias → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU())


class StdConv2d(nn.Conv2d):
    """A conv whose weight is standardised per output channel at every call (zero mean, unit variance)."""

    def standardised_weight(self) -> torch.Tensor:
        """The weight the convolution really uses: ``(w - mean) / sqrt(var + 1e-5)`` per output channel."""
        var, mean = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        return (self.weight - mean) / torch.sqrt(var + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with the standardised weight."""
        return F.conv2d(x, self.standardised_weight(), self.bias, self.stride, self.padding)


def _down(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    """One of the backbone's downsampling convs: weight-standardised conv → GroupNorm(32) → ReLU."""
    return nn.Sequential(StdConv2d(cin, cout, kernel, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(32, cout, eps=1e-6), nn.ReLU())


class RPBlock(nn.Module):
    """One resolution-preserving block: three branches, fuse, residual."""

    kernels = (1, 3, 5)
    radius = max(kernels) // 2

    def __init__(self, width: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv_bn_relu(width, int(width * r), k)
                                      for r, k in zip(RATIOS, self.kernels, strict=True))
        self.fuse_conv = _conv_bn_relu(int(width * sum(RATIOS)), width, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block; output has the input's shape (``mask``: valid pixels, see the module)."""
        xin = _masked(x, mask)
        return self.fuse_conv(torch.cat([b(xin) for b in self.branches], dim=1)) + x

    def forward_core(self, x: torch.Tensor, edges: Edges, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block to a window; sides not on the raster's edge lose 2 px (``mask``: ``x``'s size)."""
        xin = _masked(x, mask)
        y = torch.cat([b[1:](_core_conv(b[0], xin, edges, self.radius)) for b in self.branches], dim=1)
        return self.fuse_conv(y) + _crop(x, edges, self.radius)


class L2HNetBackbone(nn.Module):
    """The authors' L2HNet backbone with ``width`` channels (64 "light" or 128 "normal").

    ``downsampling`` adds ``out_conv1..3``, which feed Paraformer's transformer.
    """

    stem_kernel = 3

    def __init__(self, bands: int = 4, width: int = 64, downsampling: bool = False) -> None:
        super().__init__()
        if width % 4:
            raise ValueError(f"L2HNet width must be a multiple of 4, got {width}")
        self.bands, self.width = bands, width
        self.startconv = nn.Conv2d(bands, width, self.stem_kernel, padding=self.stem_kernel // 2)
        self.rpblocks = nn.ModuleList(RPBlock(width) for _ in range(BLOCKS))
        if downsampling:
            down = DOWN_CHANNELS * BLOCKS
            self.out_conv1 = _down(width * BLOCKS, down, 3, 2)
            self.out_conv2 = _down(down, 1024, 3, 2)
            self.out_conv3 = _down(1024, 1024, 5, 4)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each side that one full-resolution feature depends on (11)."""
        return self.stem_kernel // 2 + len(self.rpblocks) * RPBlock.radius

    def blocks(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each RP block's output at full resolution (the last is the backbone's feature map)."""
        y = self.startconv(_masked(x, mask))
        out = []
        for block in self.rpblocks:
            y = block(y, mask)
            out.append(y)
        return out

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The authors' forward: ``(d3, [full-res features, d3, d2, d1])`` for Paraformer."""
        blocks = self.blocks(x)
        d1 = self.out_conv1(torch.cat(blocks, dim=1))
        d2 = self.out_conv2(d1)
        d3 = self.out_conv3(d2)
        return d3, [blocks[-1], d3, d2, d1]


class L2HNet(L2HNetBackbone):
    """L2HNet as a fully convolutional classifier: the backbone plus a 1×1 ``head`` (C → classes)."""

    #: ``forward_core`` takes a ``mask`` of valid pixels and treats nodata like the raster's edge.
    nodata_as_edge = True

    def __init__(self, bands: int = 3, classes: int = 11, width: int = 64,
                 downsampling: bool = False) -> None:
        super().__init__(bands, width, downsampling)
        self.classes = classes
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``(N, bands, H, W)`` normalised imagery to ``(N, classes, H, W)`` logits.

        ``mask`` ``(N, 1, H, W)`` bool marks valid pixels: outside it every layer
        reads zeros, so valid pixels get what a pass over the valid data alone
        (zero-padded at its edge) gives.
        """
        return self.head(self.blocks(x, mask)[-1])

    def forward_core(self, x: torch.Tensor, edges: Edges, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of a window less the receptive radius on each side not on the raster's edge.

        Equal to ``forward`` over the whole raster, cropped, for any window that
        carries the receptive radius of context on its inner sides (sides on the
        raster's edge are zero-padded layer by layer, as the whole-raster pass
        does; so is the edge of ``mask``'s valid pixels).  Each layer computes
        only what later layers still use, so a 256² core with its 11 px of
        context costs about 264² per layer, not 278².
        """
        shrink = self.stem_kernel // 2
        y = _core_conv(self.startconv, _masked(x, mask), edges, shrink)
        mask = None if mask is None else _crop(mask, edges, shrink)
        for block in self.rpblocks:
            y = block.forward_core(y, edges, mask)
            mask = None if mask is None else _crop(mask, edges, block.radius)
        return self.head(y)

    def folded(self) -> L2HNet:
        """An inference copy: each BatchNorm folded into the conv before it, ``out_conv1..3`` dropped.

        The same function up to float rounding (about 1e-6 in the logits) with a
        fifth fewer passes over the activations: the engine runs this copy.
        """
        model = copy.deepcopy(self).eval()
        for name in ("out_conv1", "out_conv2", "out_conv3"):
            if hasattr(model, name):
                delattr(model, name)
        fold_batchnorms(model)
        return model


def fold_batchnorms(model: nn.Module) -> None:
    """Fold each BatchNorm following a conv in a ``Sequential`` into the conv (eval statistics), in place."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if type(seq[i]) is nn.Conv2d and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
