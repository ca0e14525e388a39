"""Accuracy figures against hand-computed examples and Olofsson et al. (2014)'s worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sinolc_dist.errors import InputError
from sinolc_dist.validate.metrics import accuracy, confusion, stratified, wilson_interval

# Olofsson, Foody, Herold, Stehman, Woodcock, Wulder (2014), "Good practices for estimating area and
# assessing accuracy of land change", Remote Sensing of Environment 148:42-57, section 5 (Tables 8-9):
# the sample counts of a stratified random sample, rows = map class (1 deforestation, 2 forest gain,
# 3 stable forest, 4 stable non-forest), columns = reference; the brief quotes its transpose
# (reference rows).  Mapped areas in 30 m pixels; published: OA 0.947 ± 0.02, user's 0.88 / 0.73 /
# 0.93 / 0.96, producer's 0.75 ± 0.21 / 0.85 ± 0.25 / 0.93 / 0.96, deforestation 21,158 ± 6,158 ha,
# forest gain 11,686 ± 3,756 ha, stable forest 285,770 ± 15,510 ha, stable non-forest
# 581,386 ± 16,282 ha (95 % intervals).  The estimator's equations match those documented for R's
# mapaccuracy::olofsson.
OLOFSSON = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
OLOFSSON_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
HA_PER_PIXEL = 0.09


def test_a_hand_computed_matrix_gives_its_oa_kappa_and_per_class_figures():
    # map rows, reference columns: n = 100, OA = 85/100; chance agreement (50·45 + 50·55) / 100² = 0.5.
    acc = accuracy(np.array([[40, 10], [5, 45]]), [1, 2])
    assert acc.n == 100 and acc.oa == pytest.approx(0.85)
    assert acc.kappa == pytest.approx((0.85 - 0.5) / 0.5)
    assert acc.users == pytest.approx([0.8, 0.9])
    assert acc.producers == pytest.approx([40 / 45, 45 / 55])
    assert acc.f1 == pytest.approx([80 / 95, 90 / 105])
    assert acc.oa_ci95 == pytest.approx((0.7672, 0.9069), abs=2e-4)  # Wilson, z = 1.96


def test_a_class_without_samples_has_undefined_figures_not_zeros():
    acc = accuracy(np.array([[3, 0, 0], [1, 4, 0], [0, 0, 0]]), [1, 2, 3])
    assert math.isnan(acc.users[2]) and math.isnan(acc.producers[2]) and math.isnan(acc.f1[2])
    row = acc.to_dict({1: "a"})["classes"][2]
    assert row["users"] is None and row["name"] == "3"


def test_an_empty_sample_and_a_mismatched_matrix():
    acc = accuracy(np.zeros((2, 2)), [1, 2])
    assert math.isnan(acc.oa) and all(math.isnan(v) for v in acc.oa_ci95)
    with pytest.raises(InputError, match="does not fit 3 class codes"):
        accuracy(np.zeros((2, 2)), [1, 2, 3])


def test_wilson_interval_stays_inside_zero_and_one():
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0)
    lo, hi = wilson_interval(99, 100)
    assert lo < 0.99 < hi <= 1.0


def test_confusion_counts_map_against_reference_and_skips_other_codes():
    mapped = np.array([1, 1, 2, 2, 3, 0], np.uint8)
    truth = np.array([1, 2, 2, 2, 1, 1], np.uint8)
    assert confusion(mapped, truth, [1, 2]).tolist() == [[1, 1], [0, 2]]
    assert confusion(mapped, truth, [1, 2], weights=np.full(6, 0.5)).tolist() == [[0.5, 0.5], [0, 1]]


def test_olofsson_2014_worked_example():
    est = stratified(OLOFSSON, [1, 2, 3, 4], OLOFSSON_PIXELS)
    assert est.weights == pytest.approx([0.02, 0.015, 0.32, 0.645])
    assert est.oa == pytest.approx(0.947, abs=5e-4)
    assert 1.96 * est.oa_se == pytest.approx(0.019, abs=1e-3)
    assert est.users == pytest.approx([0.88, 0.73, 0.93, 0.96], abs=5e-3)
    assert est.producers == pytest.approx([0.75, 0.85, 0.93, 0.96], abs=5e-3)
    assert 1.96 * est.producers_se[:2] == pytest.approx([0.21, 0.25], abs=5e-3)
    assert est.area * HA_PER_PIXEL == pytest.approx([21_158, 11_686, 285_770, 581_386], abs=1)
    assert est.area_ci95 * HA_PER_PIXEL == pytest.approx([6_158, 3_756, 15_510, 16_282], abs=1)
    assert est.area.sum() == pytest.approx(sum(OLOFSSON_PIXELS))


def test_a_proportionally_allocated_sample_gives_the_simple_oa():
    # Strata sampled in proportion to their areas: the weighted and the unweighted OA agree.
    m = np.array([[40, 10], [5, 45]])
    assert stratified(m, [1, 2], [5.0, 5.0]).oa == pytest.approx(accuracy(m, [1, 2]).oa)


def test_a_stratum_of_one_sample_has_no_variance_and_no_area_is_refused():
    est = stratified(np.array([[1, 0], [2, 8]]), [1, 2], [10.0, 90.0])
    assert math.isnan(est.users_se[0]) and not math.isnan(est.users_se[1])
    with pytest.raises(InputError, match="cover no area"):
        stratified(np.eye(2), [1, 2], [0.0, 0.0])
