from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_grid
from plugin_factory import ChipNet

from sinolc_dist.engine.inference import ModelRef, load_model
from sinolc_dist.errors import CheckpointError, ConfigError
from sinolc_dist.models.checkpoint import load_checkpoint
from sinolc_dist.models.l2hnet import L2HNet
from sinolc_dist.models.plugins import measure_receptive_radius
from tests.engine.test_inference import engine_classes

FACTORY = "tests.models.plugin_factory"


def test_factory_plugin_equals_checkpoint(random_checkpoint, random_image):
    grid = small_grid(chunk=64)
    ref = load_model(ModelRef(str(random_checkpoint), patch=32))
    plug = load_model(ModelRef(str(random_checkpoint), patch=32, plugin=f"{FACTORY}:l2hnet",
                               kwargs={"width": 16}))
    assert plug.radius == 11 and not plug.blending
    assert plug.spec.arch == "plugin" and plug.spec.classes == ref.spec.classes
    assert np.array_equal(engine_classes(plug, grid, random_image), engine_classes(ref, grid, random_image))


def test_forward_core_of_the_wrong_shape_is_refused(random_checkpoint, random_image):
    plug = load_model(ModelRef(str(random_checkpoint), patch=32, plugin=f"{FACTORY}:uncropped_core"))
    assert plug.core is not None
    # The first patch lies in the raster's corner: 32 px plus 11 px of context on two sides.
    wrong = r"model returned \(1, 11, 43, 43\) .*expected \(1, 11, 32, 32\) .*forward_core"
    with pytest.raises(ConfigError, match=wrong):
        engine_classes(plug, small_grid(chunk=64), random_image)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # torch 2.13 deprecates TorchScript
def test_torchscript_equals_checkpoint(random_checkpoint, random_image, tmp_path):
    module = load_checkpoint(random_checkpoint).build()
    path = tmp_path / "l2hnet.ts"
    torch.jit.trace(module, torch.zeros(1, 3, 32, 32)).save(str(path))
    grid = small_grid(chunk=96)
    ref = load_model(ModelRef(str(random_checkpoint), patch=32))
    ts = load_model(ModelRef(str(path), patch=32, plugin="torchscript", receptive_radius=11))
    assert np.array_equal(engine_classes(ts, grid, random_image), engine_classes(ref, grid, random_image))
    # Nothing declared and no blending: refused, naming the way out.
    with pytest.raises(ConfigError, match="declares neither receptive_radius nor chip_size"):
        load_model(ModelRef(str(path), plugin="torchscript"))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_bad_plugin_paths_are_clear(tmp_path):
    with pytest.raises(ConfigError, match=r"package\.module:factory"):
        load_model(ModelRef("", plugin="no_colon"))
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_model(ModelRef("", plugin="no_such_module_xyz:make"))
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load_model(ModelRef("", plugin=f"{FACTORY}:nope"))
    (tmp_path / "junk.ts").write_bytes(b"not torchscript")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_model(ModelRef(str(tmp_path / "junk.ts"), plugin="torchscript", receptive_radius=11))


def test_plain_state_dict_with_overrides(random_checkpoint, random_image, tmp_path):
    state = load_checkpoint(random_checkpoint).state_dict
    path = tmp_path / "plain.pt"
    torch.save(state, path)
    overrides = {"width": 16, "mean": [127.5, 127.5, 127.5], "std": [64.0, 64.0, 64.0]}
    plain_ref = ModelRef(str(path), patch=32, overrides=overrides)
    assert plain_ref.overrides == (("mean", (127.5,) * 3), ("std", (64.0,) * 3), ("width", 16))
    assert hash(plain_ref) == hash(ModelRef(str(path), patch=32, overrides=overrides))
    grid = small_grid(chunk=64)
    plain = load_model(plain_ref)
    ref = load_model(ModelRef(str(random_checkpoint), patch=32))
    assert np.array_equal(engine_classes(plain, grid, random_image), engine_classes(ref, grid, random_image))
    # The width is read from the file; a wrong one names the flag that fixes it.
    with pytest.raises(CheckpointError, match=r"has width 16 \(startconv.weight is \(16, 3, 3, 3\)\), "
                                              r"not 64: use --width 16"):
        load_model(ModelRef(str(path), overrides={**overrides, "width": 64}))
    # A plain state_dict carries no normalisation: it must be given.
    with pytest.raises(CheckpointError, match=r"plain state_dict, which carries no input normalisation: "
                                              r"give --override mean=\[...\] std=\[...\]"):
        load_model(ModelRef(str(path)))


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys(random_checkpoint, tmp_path):
    state = dict(load_checkpoint(random_checkpoint).state_dict)
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    spec = {"width": 16, "mean": [127.5] * 3, "std": [64.0] * 3}
    with pytest.raises(CheckpointError) as err:
        load_model(ModelRef(str(path), overrides=spec))
    msg = str(err.value)
    assert "does not fit l2hnet width 16" in msg
    assert "missing keys [head.bias]" in msg
    assert "unexpected keys [extra.weight]" in msg
    # The same check guards weights given to a factory plug-in.
    with pytest.raises(CheckpointError, match=r"missing keys \[head.bias\]"):
        load_model(ModelRef(str(path), plugin=f"{FACTORY}:l2hnet", kwargs={"width": 16}, overrides=spec))


@pytest.mark.parametrize("width", [8, 16, 64])
def test_measured_receptive_radius_of_l2hnet_is_11(width):
    torch.manual_seed(width)
    model = L2HNet(bands=3, classes=11, width=width)
    assert measure_receptive_radius(model, bands=3, size=33 if width < 64 else 65) == 11
    assert model.receptive_radius == 11


def test_measured_radius_refuses_a_global_model():
    with pytest.raises(ValueError, match="reached the border"):
        measure_receptive_radius(ChipNet(), bands=3, size=33)
