from __future__ import annotations

import itertools

import pytest
import torch

from sinolc_dist.models.l2hnet import L2HNet

RADIUS = 11
H, W = 120, 130


@pytest.fixture(scope="module")
def network() -> L2HNet:
    torch.manual_seed(3)
    model = L2HNet(width=16).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model


@pytest.fixture(scope="module")
def raster() -> torch.Tensor:
    return torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(4))


def test_receptive_radius():
    assert L2HNet(width=64).receptive_radius == RADIUS


def test_folded_network_is_the_same_function(network, raster):
    folded = network.folded()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # the original is kept
    with torch.inference_mode():
        a, b = network(raster), folded(raster)
    assert (a - b).abs().max() < 1e-4
    assert torch.equal(a.argmax(1), b.argmax(1))


# Patches inside, on each edge and in each corner of the raster, some with less context than the radius.
PATCHES = [(r0, c0, h, w) for (r0, c0), (h, w) in itertools.product(
    [(0, 0), (5, 7), (40, 50), (H - 40, W - 40), (0, 60), (60, 0), (H - 45, 3), (4, W - 44)],
    [(40, 40), (32, 44)])]


@pytest.mark.parametrize(("r0", "c0", "h", "w"), PATCHES)
def test_forward_core_equals_the_whole_raster_pass(network, raster, r0, c0, h, w):
    r1, c1 = min(r0 + h, H), min(c0 + w, W)
    a0, b0, a1, b1 = max(r0 - RADIUS, 0), max(c0 - RADIUS, 0), min(r1 + RADIUS, H), min(c1 + RADIUS, W)
    edges = (r0 - a0 < RADIUS, a1 - r1 < RADIUS, c0 - b0 < RADIUS, b1 - c1 < RADIUS)
    with torch.inference_mode():
        full = network(raster)[..., r0:r1, c0:c1]
        core = network.forward_core(raster[..., a0:a1, b0:b1], edges)
    # Sides on the raster's edge keep the context they had; inner sides lost the radius.
    top, left = (r0 - a0 if edges[0] else 0), (c0 - b0 if edges[2] else 0)
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
