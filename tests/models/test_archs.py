"""A state_dict that does not fit what was asked for: one error naming the flag that fixes it."""

from __future__ import annotations

import pytest
import torch

from sinolc_dist.errors import CheckpointError, ConfigError
from sinolc_dist.legend import load_legend
from sinolc_dist.models.archs import build, detect
from sinolc_dist.models.checkpoint import ModelSpec
from sinolc_dist.models.l2hnet import L2HNet
from tests.models.authors_layout import (
    L2HNET_BACKBONE,
    l2hnet_layout,
    paraformer_keys_only,
    random_state_dict,
)


@pytest.fixture(scope="module")
def l2hnet_sd() -> dict[str, torch.Tensor]:
    return random_state_dict(l2hnet_layout(), seed=1)


def test_detect_reads_the_authors_key_names(l2hnet_sd):
    assert detect(l2hnet_sd) == "l2hnet"
    assert detect(paraformer_keys_only()) == "paraformer"
    assert detect({"conv.weight": torch.zeros(1)}) is None


def test_both_l2hnet_layouts_load_with_the_width_read_from_the_file(l2hnet_sd):
    assert isinstance(build("l2hnet", l2hnet_sd, "f", None, 3, 11), L2HNet)
    with_down = random_state_dict(l2hnet_layout(downsampling=True), seed=2)
    assert hasattr(build("l2hnet", with_down, "f", 64, 3, 11), "out_conv1")


@pytest.mark.parametrize(("arch", "state", "width", "bands", "channels", "message"), [
    ("l2hnet", "paraformer", None, 4, 17,
     r"f is a Paraformer state_dict \(transformer\.\*, decoder\.\*, segmentation_head1/2\.\*\), not l2hnet: "
     r"use --arch paraformer"),
    ("paraformer", "l2hnet", None, 3, 11, r"f is an L2HNet state_dict .*not paraformer: use --arch l2hnet"),
    ("l2hnet", "l2hnet", 128, 3, 11,
     r"f has width 64 \(startconv\.weight is \(64, 3, 3, 3\)\), not 128: use --width 64"),
    ("l2hnet", "l2hnet", None, 4, 11,
     r"f takes 3 input bands .* but the model spec has 4: give --override bands=\[\.\.\.\] mean=\[\.\.\.\] "
     r"std=\[\.\.\.\] with 3 values each"),
    ("l2hnet", "backbone", None, 3, 11,
     r"f holds the L2HNet backbone without a classification head \(no head\.weight\).*named 'head'"),
    ("l2hnet", "l2hnet17", None, 3, 11,
     r"f has 17 output channels \(head\.weight is \(17, 64, 1, 1\)\) but the legend gives 11 class codes: "
     r"give one code per channel, e\.g\. --override classes=\[drop,1,2,\.\.\.\]"),
    ("unet", "l2hnet", None, 3, 11, r"unknown --arch 'unet'; known: l2hnet, paraformer \(or give the network "
                                    r"as --plugin package\.module:factory\)"),
    ("l2hnet", "old", None, 3, 11, r"f is sinolc-dist 0\.1's own L2HNet variant .*retrain"),
    ("l2hnet", "other", None, 3, 11, r"f is neither an L2HNet nor a Paraformer state_dict .*--plugin"),
])
def test_a_state_dict_that_does_not_fit_names_the_fix(l2hnet_sd, arch, state, width, bands, channels,
                                                       message):
    states = {
        "l2hnet": lambda: l2hnet_sd,
        "paraformer": paraformer_keys_only,
        "backbone": lambda: {k: v for k, v in l2hnet_sd.items() if not k.startswith("head.")},
        "l2hnet17": lambda: random_state_dict(l2hnet_layout(classes=17), seed=3),
        "old": lambda: {"stem.0.weight": torch.zeros(64, 3, 3, 3), "blocks.0.fuse.0.weight": torch.zeros(1)},
        "other": lambda: {"encoder.conv1.weight": torch.zeros(1)},
    }
    with pytest.raises(CheckpointError, match=message):
        build(arch, states[state](), "f", width, bands, channels)


def test_a_spec_with_unknown_codes_or_every_channel_dropped_is_refused():
    with pytest.raises(ConfigError, match=r"class codes \[12\] are not in legend 'SinoLC-1'"):
        ModelSpec(classes=(1, 2, 12))
    with pytest.raises(ConfigError, match="drops every output channel"):
        ModelSpec(classes=("drop", None))
    with pytest.raises(ConfigError, match=r"class code 256 must be 1\.\.255, 0 \(written as nodata\) or "):
        ModelSpec(classes=(1, 256))
    with pytest.raises(ConfigError, match="unknown legend 'nlcd'"):
        ModelSpec(legend="nlcd")


def test_channels_default_to_the_legend_and_drop_is_kept():
    assert ModelSpec().channels == tuple(range(1, 12))
    spec = ModelSpec(legend="chesapeake")
    assert spec.channels[0] is None and spec.channels[1:4] == (11, 12, 21) and len(spec.channels) == 17
    assert ModelSpec(classes=("drop", 0, 5)).channels == (None, 0, 5)
    assert load_legend("chesapeake").colours()[11] == (70, 107, 159)


def test_backbone_layout_is_pinned():
    assert len(L2HNET_BACKBONE) == 151 and "startconv.bias" in L2HNET_BACKBONE
