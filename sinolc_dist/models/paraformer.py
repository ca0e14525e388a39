"""Paraformer: the L2HNet backbone plus a ViT hybrid, in its authors' layout.

Written from the layer definitions the SinoLC-1 authors publish
(``LiZhuoHong/Paraformer``, ``networks/vit_seg_modeling.py``; no
``ml_collections`` needed): a state_dict their training script saves
(``torch.save(model.state_dict())``, 382 entries at width 64) loads strictly,
key for key.

* ``transformer.embeddings.hybrid_model``: the L2HNet backbone with its
  downsampling convs (:class:`~sinolc_dist.models.l2hnet.L2HNetBackbone`), a
  224² chip → a 1024 × 14 × 14 map and the features of every scale;
  ``patch_embeddings`` (1×1 conv 1024 → 768) and learned
  ``position_embeddings`` (1, 196, 768): chips must be exactly 224² (the
  chip side is read from the position embeddings' shape).
* ``transformer.encoder``: 12 pre-norm blocks (``attention_norm``, ``attn``
  with ``query``/``key``/``value``/``out``, ``ffn_norm``, ``ffn.fc1``/``fc2``
  with GELU; LayerNorm eps 1e-6) and ``encoder_norm``.
* ``decoder``: conv+BN+ReLU units (``conv_more``, ``conv1``..``conv4``, convs
  without bias) upsampling bilinearly (corners aligned) back to the chip,
  concatenating the backbone's features at each scale; ``conv3`` gives one
  channel that joins the backbone's full-resolution features.
* Two 3×3 heads: ``segmentation_head1`` on the backbone's C channels plus that
  channel, ``segmentation_head2`` on the decoder's 256.  ``forward`` returns
  their mean, so ``softmax(forward(x))`` is the authors' ``softmax((o1 + o2) / 2)``.

A one-pixel change reaches the whole chip: the engine runs this model on
blended chips (``chip_size``), never cut by a receptive radius.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from sinolc_dist.models.l2hnet import L2HNetBackbone, StdConv2d, fold_batchnorms

#: ViT-B/16 as the authors configure it.
HIDDEN, LAYERS, HEADS, MLP = 768, 12, 12, 3072
#: Side of the backbone's output grid in pixels of the chip (224 px → 14 × 14 tokens).
TOKEN_PX = 16
CHIP = 224


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """The decoder's unit: 3×3 conv without bias → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling with aligned corners (the authors' ``UpsamplingBilinear2d``)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


class Attention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(hidden, hidden) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, tokens, hidden)`` → the same shape."""
        b, n, h = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, h // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return self.out(y.transpose(1, 2).reshape(b, n, h))


class Mlp(nn.Module):
    """The transformer block's feed-forward part: fc1 → GELU → fc2."""

    def __init__(self, hidden: int, mlp: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(hidden, mlp), nn.Linear(mlp, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, tokens, hidden)`` → the same shape."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """One pre-norm transformer block: attention and MLP, each with a residual."""

    def __init__(self, hidden: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.ffn = Mlp(hidden, mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, tokens, hidden)`` → the same shape."""
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class Encoder(nn.Module):
    """The stack of transformer blocks and the final LayerNorm."""

    def __init__(self, hidden: int, layers: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Block(hidden, heads, mlp) for _ in range(layers))
        self.encoder_norm = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, tokens, hidden)`` → the same shape."""
        for block in self.layer:
            x = block(x)
        return self.encoder_norm(x)


class Embeddings(nn.Module):
    """Backbone features → tokens: 1×1 patch embedding of the 1024-channel map plus position embeddings."""

    def __init__(self, bands: int, width: int, hidden: int, chip: int) -> None:
        super().__init__()
        self.hybrid_model = L2HNetBackbone(bands, width, downsampling=True)
        self.patch_embeddings = nn.Conv2d(1024, hidden, 1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, (chip // TOKEN_PX) ** 2, hidden))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A chip → ``(tokens (B, n, hidden), backbone features of every scale)``."""
        d3, features = self.hybrid_model.pyramid(x)
        tokens = self.patch_embeddings(d3).flatten(2).transpose(1, 2)
        return tokens + self.position_embeddings, features


class Transformer(nn.Module):
    """Embeddings then encoder (the authors' ``transformer`` module)."""

    def __init__(self, bands: int, width: int, hidden: int, layers: int, heads: int, mlp: int,
                 chip: int) -> None:
        super().__init__()
        self.embeddings = Embeddings(bands, width, hidden, chip)
        self.encoder = Encoder(hidden, layers, heads, mlp)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A chip → ``(encoded tokens, backbone features)``."""
        tokens, features = self.embeddings(x)
        return self.encoder(tokens), features


class Decoder(nn.Module):
    """Tokens and backbone features → the CNN branch's input (C + 1 channels) and the ViT branch's (256)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv_more = _conv_bn_relu(hidden, 512)
        self.conv1 = _conv_bn_relu(512 + 1024, 512)
        self.conv2 = _conv_bn_relu(512 + 1024, 640)
        self.conv3 = _conv_bn_relu(640 + 640, 1)
        self.conv4 = _conv_bn_relu(640 + 640, 256)

    def forward(self, tokens: torch.Tensor,
                features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, n, hidden)`` tokens and ``[full, d3, d2, d1]`` features → the two heads' inputs."""
        b, n, hidden = tokens.shape
        side = math.isqrt(n)
        x = self.conv_more(tokens.transpose(1, 2).reshape(b, hidden, side, side))
        x = _up(self.conv1(torch.cat([x, features[1]], dim=1)), 4)
        x = _up(self.conv2(torch.cat([x, features[2]], dim=1)), 2)
        x = torch.cat([x, features[3]], dim=1)
        vit_map = _up(self.conv3(x), 2)
        return torch.cat([vit_map, features[0]], dim=1), _up(self.conv4(x), 2)


class Paraformer(nn.Module):
    """Paraformer for ``bands`` input bands and ``classes`` output channels on ``chip``² chips.

    Declares ``chip_size`` (the engine blends chips, at half a chip's stride
    unless the workflow says otherwise) and ``default_blend = "authors"``: with
    neither given, a run blends as the authors' ``test.py`` does.
    """

    default_blend = "authors"

    def __init__(self, bands: int = 4, classes: int = 17, width: int = 64, chip: int = CHIP,
                 hidden: int = HIDDEN, layers: int = LAYERS, heads: int = HEADS, mlp: int = MLP) -> None:
        super().__init__()
        if chip % TOKEN_PX:
            raise ValueError(f"Paraformer chips must be a multiple of {TOKEN_PX} px, got {chip}")
        self.bands, self.classes, self.width, self.chip_size = bands, classes, width, chip
        self.transformer = Transformer(bands, width, hidden, layers, heads, mlp, chip)
        self.decoder = Decoder(hidden)
        self.segmentation_head1 = nn.Sequential(nn.Conv2d(width + 1, classes, 3, padding=1), nn.Identity())
        self.segmentation_head2 = nn.Sequential(nn.Conv2d(256, classes, 3, padding=1), nn.Identity())

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two heads' logits, as the authors' ``forward`` returns them."""
        tokens, features = self.transformer(x)
        cnn, vit = self.decoder(tokens, features)
        return self.segmentation_head1(cnn), self.segmentation_head2(vit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, bands, chip, chip)`` normalised chips → the mean of the two heads' logits."""
        cnn, vit = self.heads(x)
        return (cnn + vit) / 2

    def folded(self) -> Paraformer:
        """An inference copy: BatchNorms folded into their convs, standardised weights computed once.

        The same function up to float rounding; the engine runs this copy.
        """
        model = copy.deepcopy(self).eval()
        for seq in model.modules():
            if isinstance(seq, nn.Sequential) and isinstance(seq[0], StdConv2d):
                std = seq[0]
                plain = nn.Conv2d(std.in_channels, std.out_channels, std.kernel_size, std.stride,
                                  std.padding, bias=False)
                with torch.no_grad():
                    plain.weight.copy_(std.standardised_weight())
                seq[0] = plain
        fold_batchnorms(model)
        return model
