"""The SinoLC-1 legend: 11 classes, their names and colours; 0 is nodata."""

from __future__ import annotations

NODATA = 0

#: code → (name, (r, g, b)); codes 8 and 11 are inferred from gaps in released files.
LEGEND: dict[int, tuple[str, tuple[int, int, int]]] = {
    1: ("Traffic route", (255, 0, 0)),
    2: ("Tree cover", (56, 87, 35)),
    3: ("Shrubland", (255, 190, 36)),
    4: ("Grassland", (233, 255, 190)),
    5: ("Cropland", (255, 235, 175)),
    6: ("Building", (255, 140, 0)),
    7: ("Barren and sparse vegetation", (180, 180, 180)),
    8: ("Snow and ice", (239, 240, 242)),
    9: ("Water", (1, 101, 201)),
    10: ("Wetland", (0, 148, 157)),
    11: ("Moss and lichen", (250, 230, 160)),
}


def colormap() -> dict[int, tuple[int, int, int, int]]:
    """A GDAL colour table (code → RGBA) with nodata transparent."""
    cmap = {code: (*rgb, 255) for code, (_, rgb) in LEGEND.items()}
    cmap[NODATA] = (0, 0, 0, 0)
    return cmap


def class_names() -> dict[int, str]:
    """Code → class name, nodata included."""
    return {NODATA: "No data", **{code: name for code, (name, _) in LEGEND.items()}}
