import numpy as np
import pytest

from sinolc_dist.demo.scene import CLASSES_USED, make_scene
from sinolc_dist.legend import NODATA, SINOLC


@pytest.fixture(scope="module")
def scene_1024() -> tuple[np.ndarray, np.ndarray]:
    return make_scene(1024, 1024, seed=7)


def test_same_seed_gives_identical_arrays() -> None:
    rgb_a, lab_a = make_scene(256, 320, seed=3)
    rgb_b, lab_b = make_scene(256, 320, seed=3)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_array_equal(lab_a, lab_b)


def test_different_seed_gives_different_arrays() -> None:
    rgb_a, lab_a = make_scene(256, 256, seed=3)
    rgb_b, lab_b = make_scene(256, 256, seed=4)
    assert not np.array_equal(rgb_a, rgb_b)
    assert not np.array_equal(lab_a, lab_b)


def test_shapes_and_dtypes() -> None:
    rgb, labels = make_scene(200, 300, seed=1)
    assert rgb.shape == (3, 200, 300)
    assert labels.shape == (200, 300)
    assert rgb.dtype == np.uint8
    assert labels.dtype == np.uint8


def test_classes_used_are_legend_codes() -> None:
    assert set(CLASSES_USED) <= set(SINOLC.codes)
    assert NODATA not in CLASSES_USED


def test_every_class_appears_and_no_nodata(scene_1024: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = scene_1024
    present = set(np.unique(labels).tolist())
    assert present == set(CLASSES_USED)
    assert not (labels == NODATA).any()


def test_image_is_not_degenerate(scene_1024: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = scene_1024
    # each class renders to its own colour range: mean colours differ between classes
    means = {c: rgb[:, labels == c].mean(axis=1) for c in CLASSES_USED}
    for a in CLASSES_USED:
        for b in CLASSES_USED:
            if a < b:
                assert np.abs(means[a] - means[b]).max() > 5, (a, b)
    assert 20 < rgb.std() < 80


def test_too_small_scene_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        make_scene(32, 512, seed=0)
