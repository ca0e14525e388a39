from __future__ import annotations

import itertools

import pytest
import torch

from sinolc_dist.models.l2hnet import L2HNet, L2HNetBackbone
from sinolc_dist.models.plugins import measure_receptive_radius
from tests.models.authors_layout import L2HNET_BACKBONE, l2hnet_layout, random_state_dict

RADIUS = 11
H, W = 120, 130


@pytest.fixture(scope="module")
def network() -> L2HNet:
    model = L2HNet(bands=3, classes=11, width=64)
    model.load_state_dict(random_state_dict(l2hnet_layout(), seed=3), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def raster() -> torch.Tensor:
    return torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(4))


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_backbone_is_the_authors_layout_key_for_key():
    assert shapes(L2HNetBackbone(bands=3, width=64, downsampling=True)) == L2HNET_BACKBONE
    assert len(L2HNET_BACKBONE) == 151
    # The FCN use adds only the 1×1 head; out_conv1..3 are optional (loaded, then dropped for inference).
    assert shapes(L2HNet(bands=3, classes=11, width=64)) == l2hnet_layout()
    with_down = L2HNet(bands=3, classes=11, width=64, downsampling=True)
    assert shapes(with_down) == l2hnet_layout(downsampling=True)


def test_stem_has_bias_and_no_activation_and_branches_have_biases(network):
    # The authors' stem is a plain conv: a negative pre-activation survives (no ReLU after it).
    assert network.startconv.bias is not None
    with torch.inference_mode():
        stem = network.startconv(torch.randn(1, 3, 8, 8))
    assert (stem < 0).any()
    for block in network.rpblocks:
        assert all(b[0].bias is not None for b in block.branches) and block.fuse_conv[0].bias is not None
        assert [b[0].out_channels for b in block.branches] == [64, 32, 16]


@pytest.mark.parametrize("width", [64, 128])
def test_receptive_radius_by_perturbation(width):
    torch.manual_seed(width)
    model = L2HNet(bands=3, classes=11, width=width)
    assert measure_receptive_radius(model, bands=3, size=41) == RADIUS == model.receptive_radius


def test_folded_network_is_the_same_function(network, raster):
    folded = network.folded()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # the original is kept
    with torch.inference_mode():
        a, b = network(raster), folded(raster)
    assert (a - b).abs().max() < 1e-4
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_folded_drops_the_downsampling_convs():
    model = L2HNet(width=64, downsampling=True)
    assert hasattr(model, "out_conv3") and not hasattr(model.folded(), "out_conv3")


# Patches inside, on each edge and in each corner of the raster, some with less context than the radius.
PATCHES = [(r0, c0, h, w) for (r0, c0), (h, w) in itertools.product(
    [(0, 0), (5, 7), (40, 50), (H - 40, W - 40), (0, 60), (60, 0), (H - 45, 3), (4, W - 44)],
    [(40, 40), (32, 44)])]


def core_window(r0: int, c0: int, h: int, w: int):
    r1, c1 = min(r0 + h, H), min(c0 + w, W)
    a0, b0, a1, b1 = max(r0 - RADIUS, 0), max(c0 - RADIUS, 0), min(r1 + RADIUS, H), min(c1 + RADIUS, W)
    edges = (r0 - a0 < RADIUS, a1 - r1 < RADIUS, c0 - b0 < RADIUS, b1 - c1 < RADIUS)
    # Sides on the raster's edge keep the context they had; inner sides lose the radius.
    top, left = (r0 - a0 if edges[0] else 0), (c0 - b0 if edges[2] else 0)
    return (r1, c1), (a0, b0, a1, b1), edges, (top, left)


@pytest.mark.parametrize(("r0", "c0", "h", "w"), PATCHES)
def test_forward_core_equals_the_whole_raster_pass(network, raster, r0, c0, h, w):
    (r1, c1), (a0, b0, a1, b1), edges, (top, left) = core_window(r0, c0, h, w)
    with torch.inference_mode():
        full = network(raster)[..., r0:r1, c0:c1]
        core = network.forward_core(raster[..., a0:a1, b0:b1], edges)
    core = core[..., top:top + (r1 - r0), left:left + (c1 - c0)]
    assert core.shape == full.shape
    assert (core - full).abs().max() < 1e-4
    assert torch.equal(core.argmax(1), full.argmax(1))


def test_edge_flags_decide_the_padding(network, raster):
    # A side flagged as the raster's edge keeps its context rows, computed as if the raster ended
    # there (zero padding): where the raster goes on, those rows differ from the whole-raster pass.
    window = raster[..., 30 - RADIUS:70 + RADIUS, 30 - RADIUS:70 + RADIUS]
    with torch.inference_mode():
        full = network(raster)[..., 30 - RADIUS:70, 30:70]
        inner = network.forward_core(window, (False,) * 4)
        flagged = network.forward_core(window, (True, False, False, False))
    assert (inner - full[..., RADIUS:, :]).abs().max() < 1e-4
    assert flagged.shape == full.shape
    assert (flagged - full)[..., RADIUS:, :].abs().max() < 1e-4
    assert (flagged - full)[..., :RADIUS, :].abs().max() > 1e-3


def test_a_mask_makes_nodata_an_edge(network, raster):
    # Valid data in a rectangle of the raster: every layer then sees zeros outside it, so the valid
    # pixels get exactly what a pass over the rectangle alone gives (its own edges zero-padded).
    mask = torch.zeros(1, 1, H, W, dtype=torch.bool)
    mask[..., 17:93, 21:111] = True
    noisy = torch.where(mask, raster, torch.randn(raster.shape) * 50)  # what lies outside must not matter
    with torch.inference_mode():
        alone = network(raster[..., 17:93, 21:111])
        masked = network(noisy, mask)[..., 17:93, 21:111]
        unmasked = network(noisy)[..., 17:93, 21:111]
    assert (masked - alone).abs().max() < 1e-4
    assert (unmasked - alone).abs().max() > 1e-2  # without the mask the edge pixels differ


@pytest.mark.parametrize(("r0", "c0", "h", "w"), PATCHES[::3])
def test_forward_core_with_a_mask_equals_the_masked_whole_raster_pass(network, raster, r0, c0, h, w):
    mask = torch.ones(1, 1, H, W, dtype=torch.bool)
    mask[..., 25:60, 40:47] = False  # a nodata hole
    mask[..., 90:, :12] = False      # and a corner
    (r1, c1), (a0, b0, a1, b1), edges, (top, left) = core_window(r0, c0, h, w)
    with torch.inference_mode():
        full = network(raster, mask)[..., r0:r1, c0:c1]
        core = network.forward_core(raster[..., a0:a1, b0:b1], edges, mask[..., a0:a1, b0:b1])
    core = core[..., top:top + (r1 - r0), left:left + (c1 - c0)]
    valid = mask[..., r0:r1, c0:c1].expand_as(full)
    assert (core - full)[valid].abs().max() < 1e-4
