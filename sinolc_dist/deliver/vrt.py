"""The national VRT: one GDAL raster over the provincial COGs, written as XML.

GDAL cannot read the Zarr v3 store, and ``gdalbuildvrt`` may be missing where
the driver runs, so the national VRT (``mosaics/china.vrt``) is written here: one ``ComplexSource``
per province on one lattice, with the legend's colour table and class names.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

import rasterio
from pyproj import CRS

from sinolc_dist.errors import InputError
from sinolc_dist.files import atomic_write_text
from sinolc_dist.legend import NODATA, SINOLC, Legend, band_description


def _axis_mapping(crs: CRS) -> str:
    """GDAL's data-axis-to-CRS-axis mapping for (x, y) data: ``2,1`` when the CRS lists latitude first."""
    return "2,1" if crs.axis_info and crs.axis_info[0].direction in ("north", "south") else "1,2"


def write_vrt(files: Sequence[Path], dst: Path, legend: Legend = SINOLC) -> Path:
    """Write a VRT mosaicking COGs that lie on one lattice (same CRS and pixel size).

    Each file is a ``ComplexSource`` with ``NODATA 0``: a province's pixels
    outside its polygon are 0 and do not cover its neighbour's where their
    windows overlap.  Paths are relative to the VRT, so the ``mosaics`` folder
    can be moved whole.  Raises :class:`InputError` when the files do not line up.
    """
    infos = []
    for path in files:
        with rasterio.open(path) as src:
            infos.append((Path(path), src.crs, src.transform, src.width, src.height, src.block_shapes[0]))
    _, crs0, t0, *_ = infos[0]
    for path, crs, t, *_ in infos:
        if crs != crs0 or t.b or t.d or not (math.isclose(t.a, t0.a) and math.isclose(t.e, t0.e)):
            raise InputError(f"{path.name} is not in the CRS and pixel size of {infos[0][0].name}: "
                             "write every province with the same --crs, then the VRT follows")
    left, top = min(i[2].c for i in infos), max(i[2].f for i in infos)

    def offset(value: float, origin: float, step: float, name: str) -> int:
        k = (value - origin) / step
        if abs(k - round(k)) > 1e-6:
            raise InputError(f"{name} is not aligned to the pixels of the other provinces "
                             f"({k:.6f} px off): rewrite the mosaics with one `sinolc-dist mosaic` call")
        return round(k)

    width = max(offset(t.c + w * t.a, left, t0.a, p.name) for p, _, t, w, _, _ in infos)
    height = max(offset(t.f + h * t.e, top, t0.e, p.name) for p, _, t, _, h, _ in infos)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    srs = ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping=_axis_mapping(CRS.from_wkt(crs0.to_wkt())))
    srs.text = crs0.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (left, t0.a, 0.0, top, 0.0, t0.e))
    band = _class_band(root, legend)
    for path, _, t, w, h, (block_y, block_x) in infos:
        source = ET.SubElement(band, "ComplexSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = \
            os.path.relpath(path.resolve(), dst.parent.resolve())
        ET.SubElement(source, "SourceBand").text = "1"
        ET.SubElement(source, "SourceProperties", RasterXSize=str(w), RasterYSize=str(h),
                      DataType="Byte", BlockXSize=str(block_x), BlockYSize=str(block_y))
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(source, "DstRect", xOff=str(offset(t.c, left, t0.a, path.name)),
                      yOff=str(offset(t.f, top, t0.e, path.name)), xSize=str(w), ySize=str(h))
        ET.SubElement(source, "NODATA").text = str(NODATA)
    ET.indent(root)
    atomic_write_text(dst, ET.tostring(root, encoding="unicode") + "\n")
    return dst


def _class_band(root: ET.Element, legend: Legend) -> ET.Element:
    """The VRT's one band: the legend's class names, its colour table, nodata 0."""
    meta = ET.SubElement(root, "Metadata")
    names = json.dumps({str(c): n for c, n in legend.class_names().items()})
    ET.SubElement(meta, "MDI", key="CLASS_NAMES").text = names
    band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ET.SubElement(band, "Description").text = band_description(legend)
    ET.SubElement(band, "NoDataValue").text = str(NODATA)
    ET.SubElement(band, "ColorInterp").text = "Palette"
    table = ET.SubElement(band, "ColorTable")
    cmap = legend.colormap()
    for code in range(max(cmap) + 1):
        r, g, b, a = cmap.get(code, (0, 0, 0, 0))
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    return band
