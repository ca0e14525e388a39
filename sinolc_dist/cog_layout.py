"""The tile side and overview factors of a COG that rio-cogeo accepts: one rule for every COG we write.

The provincial mosaics (:mod:`sinolc_dist.deliver`) and the repaired maps
(:mod:`sinolc_dist.audit.repair`) make their overview levels themselves and
hand them to GDAL's COG driver, so both need the levels the driver and
rio-cogeo's validator agree on; this module is that rule, in the foundation.
"""

from __future__ import annotations

#: COG tile side; 256 is used only where 512 would trip rio-cogeo's tiling check.
TILE = 512
#: rio-cogeo checks the tiling of an image level only when it is larger than this.
_CHECKED_ABOVE = 512


def _flagged(width: int, height: int, tile: int) -> bool:
    """Whether rio-cogeo would call an image level of this size "not tiled".

    It takes a level whose tile is as wide as the level itself for a strip
    layout, so e.g. a 512 x 800 overview with 512 px tiles fails validation.
    """
    return width == tile and max(width, height) > _CHECKED_ABOVE


def layout(width: int, height: int) -> tuple[int, list[int]]:
    """Tile side and overview factors for an image that rio-cogeo will accept.

    Levels follow rio-cogeo's own rule (halve until the smaller side is one
    tile); GDAL rounds overview sizes up.  A 512 px tile is kept unless it makes
    some level "not tiled" (see :func:`_flagged`); then 256 px is tried, and if
    both would have to stop early the one with more overviews wins.
    """
    options = []
    for tile in (TILE, TILE // 2):
        if _flagged(width, height, tile):
            continue
        factors: list[int] = []
        complete = True
        factor = 1
        while min(width // factor, height // factor) > tile:
            factor *= 2
            if _flagged(-(-width // factor), -(-height // factor), tile):
                complete = False
                break
            factors.append(factor)
        options.append((complete, 0 if complete else len(factors), tile, factors))
    _, _, tile, factors = max(options, key=lambda o: o[:3])
    return tile, factors
