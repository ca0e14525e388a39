"""The ``--map`` quicklook: gathered while streaming, drawn with the file's colours, written atomically."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from synthetic import land_cover

from sinolc_dist.audit.quicklook import SIDE, Quicklook, draw_map
from sinolc_dist.audit.seams import Seam
from sinolc_dist.audit.strips import Strip
from sinolc_dist.errors import InputError
from sinolc_dist.legend import SINOLC


def test_the_quicklook_keeps_every_step_th_pixel_whatever_the_bands():
    image = land_cover(2500, 1300, 2)
    look = Quicklook(*image.shape, "uint8")
    assert look.step == -(-2500 // SIDE)
    for row in range(0, 2500, 333):
        look.add(row, image[row:row + 333])
    assert np.array_equal(look.image, image[::look.step, ::look.step])


def test_the_map_marks_strips_and_seams(tmp_path):
    image = land_cover(600, 800, 2)
    look = Quicklook(*image.shape, "uint8")
    look.add(0, image)
    strips = [Strip("columns", 300, 100, 0.99, 0.8), Strip("rows", 200, 50, 0.98, 0.7)]
    seams = [Seam("columns", 512, 0, 256, "offset", 3, 0.2), Seam("rows", 256, 256, 512, "gap", 2, 1.0)]
    path = draw_map(look, strips, seams, tmp_path / "map.png", SINOLC.colormap(), title="m.tif")
    picture = imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 300
    assert not list(tmp_path.glob(".*partial*"))
    draw_map(look, [], [], tmp_path / "plain.png", None)  # no colour table: the legend's colours
    assert (tmp_path / "plain.png").stat().st_size > 1000


def test_an_unwritable_map_path_is_one_input_error(tmp_path):
    look = Quicklook(64, 64, "uint8")
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(InputError, match=r"cannot write map .*taken.*another --map path"):
        draw_map(look, [], [], tmp_path / "taken" / "map.png", None)
