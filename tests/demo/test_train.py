"""The demo training script: its pieces, and a few-step training run that saves a loadable checkpoint.

The shipped checkpoint's quality is tested in tests/models/test_demo_checkpoint.py;
here the training scenes are shrunk so that a run takes seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sinolc_dist.demo import train as demo_train
from sinolc_dist.demo.scene import make_scene
from sinolc_dist.demo.train import (
    band_stats,
    class_recall,
    cross_entropy,
    normalise,
    overall_accuracy,
    sample_batch,
)
from sinolc_dist.models import load_checkpoint


@pytest.fixture
def tiny_training(monkeypatch):
    """Two 128² training scenes and one 96² held-out scene; torch's global settings restored afterwards."""
    monkeypatch.setattr(demo_train, "TRAIN_SEEDS", (101, 102))
    monkeypatch.setattr(demo_train, "TRAIN_SIZE", 128)
    monkeypatch.setattr(demo_train, "EVAL_SEEDS", (12345,))
    monkeypatch.setattr(demo_train, "EVAL_SIZE", 96)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def test_band_stats_equal_numpy_over_all_scenes():
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, size=(3, 20, 30), dtype=np.uint8) for _ in range(2)]
    mean, std = band_stats(scenes)
    pixels = np.concatenate([s.reshape(3, -1) for s in scenes], axis=1).astype(np.float64)
    assert mean == pytest.approx(tuple(pixels.mean(axis=1)))
    assert std == pytest.approx(tuple(pixels.std(axis=1)))


def test_normalise_subtracts_the_mean_and_divides_by_the_std():
    rgb = np.array([[[10, 20]], [[30, 40]], [[50, 60]]], np.uint8)
    x = normalise(rgb, (10.0, 20.0, 30.0), (10.0, 5.0, 2.0))
    assert x.dtype == torch.float32 and x.tolist() == [[[0.0, 1.0]], [[2.0, 4.0]], [[10.0, 15.0]]]


def test_sample_batch_crops_aligned_rgb_and_labels():
    scenes = [make_scene(128, 160, seed) for seed in (1, 2)]
    rgb, labels = sample_batch(np.random.default_rng(3), scenes, batch=5, patch=32)
    assert rgb.shape == (5, 3, 32, 32) and labels.shape == (5, 32, 32)
    windows = [(np.lib.stride_tricks.sliding_window_view(s_rgb, (3, 32, 32))[0],
                np.lib.stride_tricks.sliding_window_view(s_lab, (32, 32))) for s_rgb, s_lab in scenes]
    for crop, lab in zip(rgb, labels, strict=True):
        # Each crop is a window of one scene, rgb and labels from the same place.
        assert any(((w_rgb == crop).all(axis=(2, 3, 4)) & (w_lab == lab).all(axis=(2, 3))).any()
                   for w_rgb, w_lab in windows)
    again = sample_batch(np.random.default_rng(3), scenes, batch=5, patch=32)
    assert np.array_equal(again[0], rgb) and np.array_equal(again[1], labels)  # seeded


def test_accuracy_and_recall_ignore_unlabelled_pixels():
    labels = np.array([[0, 5, 5, 7], [7, 7, 0, 5]], np.uint8)
    pred = np.array([[9, 5, 1, 7], [7, 1, 9, 5]], np.uint8)
    assert overall_accuracy(pred, labels) == pytest.approx(4 / 6)
    assert class_recall(pred, labels) == pytest.approx({5: 2 / 3, 7: 2 / 3})


def test_cross_entropy_equals_torch():
    torch.manual_seed(0)
    logits = torch.randn(2, 11, 5, 4)
    target = torch.randint(0, 11, (2, 5, 4))
    assert cross_entropy(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-6)


def test_training_is_seeded(tiny_training):
    logs: list[str] = []
    model, spec = demo_train.train(steps=6, width=8, seed=1, log=logs.append)
    again, _ = demo_train.train(steps=6, width=8, seed=1, log=lambda _: None)
    other, _ = demo_train.train(steps=6, width=8, seed=2, log=lambda _: None)
    weights = [m.state_dict() for m in (model, again, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert not model.training and spec.width == 8 and spec.classes == tuple(range(1, 12))
    assert "steps 6" in spec.description and "seed 1" in spec.description
    assert logs[0].startswith("training scenes (101, 102) (128²)") and logs[-1].startswith("step 6/6 loss ")


def test_main_saves_a_checkpoint_that_loads_and_predicts(tiny_training, tmp_path, capsys):
    out = tmp_path / "ckpt" / "tiny.pt"
    assert demo_train.main(["--out", str(out), "--steps", "3", "--width", "8", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "held-out seed 12345 (96²): OA " in printed and f"saved {out}" in printed
    ckpt = load_checkpoint(out)
    assert ckpt.spec.width == 8 and ckpt.spec.bands == ("red", "green", "blue")
    rgb, labels = make_scene(64, 64, 7)
    pred = demo_train.predict(ckpt.build(), rgb, ckpt.spec.mean, ckpt.spec.std, ckpt.spec.classes)
    assert pred.shape == labels.shape and set(np.unique(pred)) <= set(range(1, 12))
