from __future__ import annotations

import pytest
import torch

from sinolc_dist.models.archs import build
from sinolc_dist.models.paraformer import Paraformer
from tests.models.authors_layout import PARAFORMER, paraformer_layout, random_state_dict


@pytest.fixture(scope="module")
def small() -> Paraformer:
    """The authors' layout with 64 px chips (4 × 4 tokens): the same keys, cheap to run."""
    return build("paraformer", random_state_dict(paraformer_layout(chip=64), seed=5), "test", None, 4, 17)


def test_paraformer_is_the_authors_layout_key_for_key():
    model = Paraformer(bands=4, classes=17, width=64)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == PARAFORMER
    assert len(PARAFORMER) == 382
    params = sum(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert round(params / 1e6, 1) == 142.7


def test_a_state_dict_in_the_authors_layout_loads_strictly_and_folds():
    model = build("paraformer", random_state_dict(PARAFORMER, seed=1), "test", None, 4, 17)
    assert isinstance(model, Paraformer) and model.chip_size == 224 and not model.training
    x = torch.randn(1, 4, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        cnn, vit = model.heads(x)
        mean = model(x)
        folded = model.folded()(x)
    assert cnn.shape == vit.shape == (1, 17, 224, 224)
    assert torch.equal(mean, (cnn + vit) / 2)  # softmax(forward) is the authors' softmax((o1 + o2) / 2)
    assert (folded - mean).abs().max() < 1e-3 * mean.abs().max()
    assert (folded.argmax(1) == mean.argmax(1)).float().mean() > 0.9999


def test_the_chip_side_comes_from_the_position_embeddings(small):
    assert small.chip_size == 64
    with pytest.raises(RuntimeError, match="size"):
        small(torch.zeros(1, 4, 96, 96))  # 6 × 6 tokens do not match 4 × 4 position embeddings


def test_one_pixel_reaches_the_whole_chip(small):
    x = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    y = x.clone()
    y[..., 32, 32] += 5.0
    with torch.inference_mode():
        changed = (small(x) != small(y)).any(dim=1)[0]
    # The transformer mixes every token: all four corners change, far beyond any CNN radius.
    assert changed[0, 0] and changed[0, -1] and changed[-1, 0] and changed[-1, -1]
