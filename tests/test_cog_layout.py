"""The COG level rule: tile side and overview factors rio-cogeo accepts."""

from __future__ import annotations

import pytest

from sinolc_dist.cog_layout import layout


@pytest.mark.parametrize(("width", "height", "tile", "factors"), [
    (300, 200, 512, []),  # one tile: no overview
    (1024, 1024, 512, [2]),
    (1595, 1494, 512, [2, 4]),  # halve until the smaller side is one tile
    (5000, 600, 512, [2]),
    (512, 800, 256, [2]),  # 512 px tiles would make the full image "not tiled" for rio-cogeo
])
def test_layout(width, height, tile, factors):
    assert layout(width, height) == (tile, factors)


@pytest.mark.parametrize(("width", "height"),
                         [(512, 800), (1024, 1600), (700, 2049), (4096, 3000), (513, 513)])
def test_layout_keeps_every_level_tiled_and_stops_at_one_tile(width, height):
    tile, factors = layout(width, height)
    sizes = [(width, height)] + [(-(-width // f), -(-height // f)) for f in factors]
    for w, h in sizes:  # rio-cogeo calls a level whose tile is its width, above 512 px, "not tiled"
        assert not (w == tile and max(w, h) > 512), (tile, w, h)
    assert factors == [2 ** (i + 1) for i in range(len(factors))]
    last = factors[-1] if factors else 1
    assert min(width // last, height // last) <= tile < min(width // (last // 2), height // (last // 2)) \
        if factors else min(width, height) <= tile
