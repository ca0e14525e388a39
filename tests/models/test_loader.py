"""The driver's model check: each refusal names the workflow key that fixes it, with values that work."""

from __future__ import annotations

import pytest

from sinolc_dist.errors import ConfigError
from sinolc_dist.models.loader import ModelRef, check_model
from tests.conftest import small_grid


def test_a_patch_that_does_not_divide_the_chunk_names_model_patch(random_checkpoint):
    with pytest.raises(ConfigError) as err:
        check_model(ModelRef(str(random_checkpoint), patch=48), small_grid(chunk=512, block=256, halo=11))
    assert str(err.value) == ("model.patch 48 does not divide the chunk size 512: set model.patch to 256, "
                              "512, auto or another divisor of 512 of at least 16")


def test_an_unknown_blend_names_model_blend(random_checkpoint):
    with pytest.raises(ConfigError, match=r"^model\.blend must be one of none, gaussian, authors, got 'x'$"):
        ModelRef(str(random_checkpoint), blend="x")
