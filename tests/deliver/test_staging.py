from __future__ import annotations

import numpy as np
import pytest
import shapely

from sinolc_dist.deliver.staging import AreaSum, outside, pieces, polygonal
from sinolc_dist.deliver.stats import PixelAreas, class_km2
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import CHINA_ALBERS, Grid, Window

ALBERS = Grid(crs=CHINA_ALBERS, resolution=1.0, origin=(1_000_000.0, 3_500_000.0), size=(900, 700),
              chunk=128, block=64, shard=2, halo=8)
LONLAT = Grid(crs="EPSG:4326", resolution=8.983152841195214e-06, origin=(110.0, 30.0), size=(900, 700),
              chunk=128, block=64, shard=2, halo=8)


def _classes(window: Window) -> np.ndarray:
    rng = np.random.default_rng(4)
    return rng.integers(0, 12, size=(window.height, window.width), dtype=np.uint8)


def _summed(grid: Grid, window: Window, data: np.ndarray, side: int) -> AreaSum:
    sums = AreaSum(grid, tuple(range(1, 12)))
    for piece in pieces(window, side):
        r, c = piece.row0 - window.row0, piece.col0 - window.col0
        sums.add(piece, data[r:r + piece.height, c:c + piece.width])
    return sums


def test_areas_on_an_equal_area_grid_do_not_depend_on_the_pieces():
    window = Window(3, 5, 890, 697)
    data = _classes(window)
    totals = [_summed(ALBERS, window, data, side).km2 for side in (64, 128, 300, 1024)]
    for total in totals[1:]:
        assert total.tobytes() == totals[0].tobytes()  # to the last bit
    assert totals[0] == pytest.approx(class_km2(PixelAreas(ALBERS), window, data), rel=1e-15)
    merged = AreaSum(ALBERS)
    for part in (_summed(ALBERS, Window(3, 5, 400, 697), data[:397], 64),
                 _summed(ALBERS, Window(400, 5, 890, 697), data[397:], 128)):
        merged.merge(part.raw)
    assert merged.km2.tobytes() == totals[0].tobytes()


def test_areas_elsewhere_are_added_in_km2():
    window = Window(0, 0, 900, 700)
    data = _classes(window)
    total = _summed(LONLAT, window, data, 256).km2
    assert total == pytest.approx(class_km2(PixelAreas(LONLAT), window, data), rel=1e-12)


def test_outside_and_polygonal():
    piece = Window(0, 0, 100, 100)
    far = shapely.box(2_000_000.0, 0.0, 2_000_100.0, 100.0)
    assert outside(ALBERS, piece, far) and not outside(ALBERS, piece, None)
    assert not outside(ALBERS, piece, shapely.box(*ALBERS.window_bounds(piece)).buffer(-10))
    with pytest.raises(ConfigError, match="Polygon or MultiPolygon"):
        polygonal(shapely.LineString([(0, 0), (1, 1)]))
    bow_tie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert polygonal(bow_tie).is_valid
