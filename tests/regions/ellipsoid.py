"""Known areas on the GRS80 ellipsoid, from the closed formula: expectations independent of the package."""

from __future__ import annotations

import math

#: GRS80 (the ellipsoid of CGCS2000 and of China Albers): semi-major axis, flattening.
GRS80_A, GRS80_F = 6378137.0, 1 / 298.257222101


def grs80_cell_km2(lat_south: float, lat_north: float, dlon: float) -> float:
    """Area of a lon/lat cell on GRS80 in km²: the band between two latitudes times dlon / 360°."""
    b, e = GRS80_A * (1 - GRS80_F), math.sqrt(GRS80_F * (2 - GRS80_F))

    def q(lat: float) -> float:
        s = math.sin(math.radians(lat))
        return s / (1 - e * e * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return math.radians(dlon) * b * b * (q(lat_north) - q(lat_south)) / 2 / 1e6
