"""Duplicated strips in synthetic land-cover maps: exact start and width, no false positives."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import clean_maps, duplicate, land_cover

from sinolc_dist.audit.strips import Samples, Strip, find_strips, mismatch

SIZES = [16, 17, 33, 64, 100, 128, 255, 300, 459, 512]


def strips(image: np.ndarray, min_width: int = 16) -> tuple[list[Strip], list[Strip]]:
    samples = Samples(*image.shape, image.dtype.name)
    for row in range(0, image.shape[0], 256):  # in bands, as the file streams
        samples.add(row, image[row:row + 256])
    return (find_strips(samples.rows, "columns", 0, min_width),
            find_strips(samples.cols, "rows", 0, min_width))


def spans(found: list[Strip]) -> list[tuple[int, int]]:
    return [(s.start, s.width) for s in found]


@pytest.mark.parametrize("changed", [0.0, 0.01, 0.03])
@pytest.mark.parametrize("seed", [1, 2])
def test_strips_of_16_to_512_px_on_both_axes_are_found_exactly(seed, changed):
    base = land_cover(1100, 1300, seed)
    rng = np.random.default_rng(seed)
    for width in SIZES:
        col = int(rng.integers(width, base.shape[1] - width))
        row = int(rng.integers(width, base.shape[0] - width))
        image = duplicate(duplicate(base, 1, col, width, changed, seed), 0, row, width, changed, seed + 1)
        columns, rows = strips(image)
        assert spans(columns) == [(col, width)], (width, col)
        assert spans(rows) == [(row, width)], (width, row)
        similarity = columns[0].similarity
        assert similarity is not None
        assert 1 - similarity <= 2 * changed + 0.01
        assert columns[0].outside > 0.15


@pytest.mark.parametrize("changed", [0.0, 0.02])
def test_the_released_files_strip_sizes_4591_columns_and_2685_rows(changed):
    wide = duplicate(land_cover(300, 9400, 3), 1, 4700, 4591, changed)
    tall = duplicate(land_cover(6200, 300, 4), 0, 3100, 2685, changed)
    assert spans(strips(wide)[0]) == [(4700, 4591)]
    assert spans(strips(wide)[1]) == []
    assert spans(strips(tall)[1]) == [(3100, 2685)]
    assert spans(strips(tall)[0]) == []


@pytest.mark.parametrize("name", list(clean_maps()))
def test_maps_without_strips_give_no_finding(name):
    image = clean_maps()[name]
    assert strips(image) == ([], [])
    assert strips(image, min_width=4) == ([], [])


def test_a_strip_across_a_province_outline_with_nodata_around_it():
    base = clean_maps()["province outline"]
    image = duplicate(duplicate(base, 1, 450, 100, 0.02), 0, 380, 64, 0.02)
    columns, rows = strips(image)
    assert spans(columns) == [(450, 100)]
    assert spans(rows) == [(380, 64)]


def test_several_strips_on_one_axis_and_uint16_codes():
    base = land_cover(800, 1600, 5).astype(np.uint16) * 1000
    image = duplicate(duplicate(base, 1, 1200, 40), 1, 300, 200)
    assert spans(strips(image)[0]) == [(300, 200), (1400, 40)]  # the first moved right by the second


def test_mismatch_ignores_lines_where_both_are_nodata():
    profile = np.array([[0, 0, 0, 0], [5, 5, 5, 6]] * 20, np.uint8)
    share = mismatch(profile, nodata=0, shift=1, lo=1, hi=4)
    assert share.tolist() == [0.0, 0.0, 1.0]
    assert mismatch(profile[:2], 0, 1, 1, 4).tolist() == [1.0, 1.0, 1.0]  # too few lines to tell


def test_a_strip_as_json():
    strip = Strip("columns", 43455, 4591, 0.98, 0.9)
    assert strip.end == 48046
    assert strip.to_dict() == {"axis": "columns", "start": 43455, "width": 4591, "similarity": 0.98,
                               "outside": 0.9, "end": 48046}
