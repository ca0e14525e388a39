from __future__ import annotations

import logging

import pytest

from sinolc_dist.engine import patches
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import Window
from sinolc_dist.models.loader import ModelRef, load_model


def test_lattice_tiles_the_chunk_from_its_origin():
    tiles = patches.lattice(Window(64, 128, 164, 228), 64)
    assert tiles == [Window(64, 128, 128, 192), Window(64, 192, 128, 228),
                     Window(128, 128, 164, 192), Window(128, 192, 164, 228)]


@pytest.mark.parametrize(("chunk", "sides"), [
    (4096, [64, 128, 256, 512, 1024, 2048, 4096]),
    (768, [64, 128, 192, 256, 384, 768]),
    (100, [100]),
])
def test_candidates_divide_the_chunk(chunk, sides):
    assert patches.candidates(chunk) == sides


def test_largest_fitting_patch_for_a_memory_budget():
    sides = patches.candidates(4096)
    # 2 KiB per px of grown patch (width 64, bf16, measured order) and 40 GiB: 4096+22 fits.
    assert patches.largest_fitting(sides, 2048, 40 * 2**30, 11) == 4096
    assert patches.largest_fitting(sides, 2048, 3 * 2**30, 11) == 1024     # 1046² · 2 KiB = 2.1 GiB
    assert patches.largest_fitting(sides, 2048, 1 * 2**20, 11) == 64       # nothing fits: the smallest


def test_auto_patch_is_calibrated_once_per_chunk_size(random_checkpoint, caplog):
    load_model.cache_clear()  # a model another test loaded may have chosen already
    model = load_model(ModelRef(str(random_checkpoint), patch="auto", device="cpu"))
    with caplog.at_level(logging.INFO, logger="sinolc_dist.engine.inference"):
        side = patches.patch_size(model, 256)
        assert patches.patch_size(model, 256) == side
    assert side in (64, 128, 256)
    assert len([r for r in caplog.records if "calibrated" in r.message]) == 1
    assert patches.patch_size(model, 100) == 100


def test_explicit_patch_is_used_as_given(random_checkpoint):
    model = load_model(ModelRef(str(random_checkpoint), patch=64, device="cpu"))
    assert patches.patch_size(model, 256) == 64
    assert patches.patch_size(model, 32) == 32


@pytest.mark.parametrize("bad", ["big", 8, 0, True, 12.5])
def test_bad_patch_setting_is_refused(random_checkpoint, bad):
    with pytest.raises(ConfigError, match=r"model\.patch must be 'auto' or a side of at least 16 px"):
        ModelRef(str(random_checkpoint), patch=bad)
