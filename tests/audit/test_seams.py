"""Seams on a tile grid: offsets along a tile line, overlaps across it, nodata slivers; none in clean maps."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import clean_maps, land_cover

from sinolc_dist.audit.seams import DEPTH, Seam, SeamLines, find_seams


def seams(image: np.ndarray, tile: int = 128) -> list[Seam]:
    lines = SeamLines(*image.shape, image.dtype.name, tile)
    for row in range(0, image.shape[0], 100):  # bands that do not follow the tiles
        lines.add(row, image[row:row + 100])
    return find_seams(lines, 0)


def found(image: np.ndarray) -> set[tuple[str, int, int, str, int]]:
    return {(s.axis, s.position, s.start, s.kind, s.shift) for s in seams(image)}


@pytest.fixture(scope="module")
def ground() -> np.ndarray:
    return land_cover(740, 940, 3)


def test_a_tile_stitched_4_px_off_along_its_sides(ground):
    image = ground[20:720, 20:920].copy()
    image[256:384, 384:512] = ground[20 + 260:20 + 388, 20 + 384:20 + 512]  # the tile's content 4 rows off
    assert found(image) == {("columns", 384, 256, "offset", -4), ("columns", 512, 256, "offset", 4)}


def test_a_tile_stitched_3_px_off_along_a_horizontal_line(ground):
    image = ground[20:720, 20:920].copy()
    image[512:640, 256:384] = ground[20 + 512:20 + 640, 20 + 253:20 + 381]
    top, bottom = sorted(seams(image), key=lambda s: s.position)
    assert (top.axis, top.position, top.start, top.kind, top.shift) == ("rows", 512, 256, "offset", 3)
    assert (bottom.position, bottom.kind) == (640, "offset")
    assert bottom.shift in (-3, -4)  # few field edges cross this stretch: the estimate may be a pixel off


def test_nodata_slivers_and_an_overlap_between_tiles(ground):
    image = ground[20:720, 20:920].copy()
    image[0:128, 640:642] = 0  # two nodata columns after the line at 640
    image[512:640, 255:256] = 0  # one before the line at 256
    image[384:512, 128:131] = image[384:512, 125:128]  # the tile repeats the 3 columns before it
    assert found(image) == {("columns", 640, 0, "gap", 2), ("columns", 256, 512, "gap", 1),
                            ("columns", 128, 384, "overlap", -3)}


@pytest.mark.parametrize("name", list(clean_maps()))
def test_maps_without_seams_give_no_finding(name):
    assert seams(clean_maps()[name]) == []


def test_blocky_classes_aligned_with_the_tiles_are_no_seam():
    blocks = np.random.default_rng(1).integers(1, 12, (88, 113)).astype(np.uint8)
    assert seams(np.kron(blocks, np.ones((8, 8), np.uint8))[:700, :900]) == []


def test_lines_are_kept_only_where_a_full_depth_fits():
    lines = SeamLines(300, 258, "uint8", 128)
    assert lines.col_lines.tolist() == [128]  # 256 + DEPTH columns do not fit in 258
    assert lines.row_lines.tolist() == [128, 256]
    assert lines.columns.shape == (lines.col_lines.size, 2 * DEPTH, 300)
    assert Seam("rows", 128, 0, 128, "gap", 2, 1.0).to_dict()["kind"] == "gap"


@pytest.mark.parametrize("shift", [3, 6])
def test_a_tile_shifted_across_a_line_is_found_on_the_lines_that_show_it(ground, shift):
    """Content k px further on: ground skipped on its left line, repeated on its right, off top and bottom.

    The skipped side alone shows nothing a natural edge could not (the ground
    that is missing is not in the map); the offsets along the lines across it
    (and an overlap, where ground k px apart differs enough) are what reveal the
    tile, and every finding lies on the tile's own lines.
    """
    image = ground[20:720, 20:920].copy()
    image[256:384, 384:512] = ground[20 + 256:20 + 384, 20 + 384 + shift:20 + 512 + shift]
    got = seams(image)
    assert any(s.kind == "offset" and abs(s.shift) == shift for s in got)
    tile_lines = {("rows", 256, 384), ("rows", 384, 384), ("columns", 384, 256), ("columns", 512, 256)}
    assert all((s.axis, s.position, s.start) in tile_lines and s.kind in ("offset", "overlap") for s in got)
