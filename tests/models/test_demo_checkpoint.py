import pytest

from sinolc_dist.demo.scene import make_scene
from sinolc_dist.demo.train import EVAL_SEEDS, TRAIN_SEEDS, overall_accuracy, predict
from sinolc_dist.models import DEMO_CHECKPOINT, load_checkpoint
from sinolc_dist.models.l2hnet import L2HNet

FRESH_SEED = 4242  # used neither for training nor for the held-out evaluation


def test_checkpoint_is_small_and_loads() -> None:
    assert DEMO_CHECKPOINT.is_file()
    assert DEMO_CHECKPOINT.stat().st_size < 5_000_000
    ckpt = load_checkpoint(DEMO_CHECKPOINT)  # torch.load(weights_only=True) inside
    spec = ckpt.spec
    assert spec.arch == "l2hnet"
    assert spec.bands == ("red", "green", "blue")
    assert spec.classes == tuple(range(1, 12))
    assert spec.resolution_m == 1.0
    assert "synthetic demo generator" in spec.description
    assert all(0 < m < 255 for m in spec.mean)
    assert all(s > 0 for s in spec.std)
    model = ckpt.build()
    assert isinstance(model, L2HNet)
    assert not model.training
    assert model.width == spec.width


def test_checkpoint_classifies_a_fresh_scene() -> None:
    assert FRESH_SEED not in TRAIN_SEEDS + EVAL_SEEDS
    ckpt = load_checkpoint(DEMO_CHECKPOINT)
    rgb, labels = make_scene(512, 512, seed=FRESH_SEED)
    pred = predict(ckpt.build(), rgb, ckpt.spec.mean, ckpt.spec.std, ckpt.spec.classes)
    assert overall_accuracy(pred, labels) >= 0.90


def test_chunked_prediction_equals_whole_scene() -> None:
    ckpt = load_checkpoint(DEMO_CHECKPOINT)
    model = ckpt.build()
    rgb, _ = make_scene(128, 128, seed=FRESH_SEED)
    args = (model, rgb, ckpt.spec.mean, ckpt.spec.std, ckpt.spec.classes)
    whole = predict(*args, chunk=128)
    chunked = predict(*args, chunk=64)  # four 75² tiles: 64² plus the 11 px halo inside
    assert (whole == chunked).mean() == pytest.approx(1.0, abs=1e-4)
