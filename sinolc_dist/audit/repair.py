"""``repair``: remove duplicated strips and close the gaps by shifting, keeping everything else of the file.

The repaired raster is described as a GDAL VRT over the original: one source
rectangle for every block of kept rows × kept columns, placed where the
strips before it no longer are, so the right and bottom parts move inward and
the top-left origin, pixel size, CRS, nodata, dtype, colour table, band
description, dataset and band tags and the raster attribute table (read from
the file's ``.aux.xml``, where GDAL keeps a GeoTIFF's RAT) come along.  For a
COG, one streamed pass over it makes the overview levels
(:mod:`sinolc_dist.audit.overviews`, nearest); GDAL's COG driver (or the GTiff
driver, ``--format gtiff``, no overviews) then streams it block by block into
a partial file beside the target (compression on every core), which is
validated (COG) and renamed into place with its ``.aux.xml``: memory stays at
one block and GDAL's block cache whatever the file's size.  The dataset tag
``SINOLC_REPAIRED`` records what was removed, in the original file's pixels.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rio_cogeo.cogeo import cog_validate

from sinolc_dist.audit.overviews import with_overviews, write_levels
from sinolc_dist.audit.report import audit
from sinolc_dist.audit.source import GDAL_ENV, open_map
from sinolc_dist.audit.strips import AXES, Strip
from sinolc_dist.cog_layout import layout
from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.files import partial_path, replacing, writable_folder
from sinolc_dist.gdal_errors import caught_gdal_errors

#: Dataset tag listing the strips removed (JSON, original pixels).
REPAIRED_TAG = "SINOLC_REPAIRED"
FORMATS = ("cog", "gtiff")
#: Disk needed while writing, in multiples of the input's bytes (for the pixels kept).
_SPACE = {"cog": 2.0, "gtiff": 1.2}
_OPTIONS = {
    "cog": {"COMPRESS": "DEFLATE", "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS", "SPARSE_OK": True},
    "gtiff": {"TILED": True, "BLOCKXSIZE": 512, "BLOCKYSIZE": 512, "COMPRESS": "DEFLATE",
              "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS", "SPARSE_OK": True},
}


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair` wrote.

    Attributes:
        source: The file repaired.
        path: The repaired file.
        removed: The strips removed (original pixels).
        width: Columns written.
        height: Rows written.
        format: ``cog`` or ``gtiff``.
        bytes: Size of the file written.
        seconds: Wall time, the audit included when the strips were found here.

    """

    source: Path
    path: Path
    removed: list[Strip]
    width: int
    height: int
    format: str
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """Plain JSON data (``--json``)."""
        return {"source": str(self.source), "path": str(self.path),
                "removed": [s.to_dict() for s in self.removed], "width": self.width, "height": self.height,
                "format": self.format, "bytes": self.bytes, "seconds": round(self.seconds, 3)}


def parse_strip(text: str) -> Strip:
    """A strip given by hand, ``columns:START:END`` or ``rows:START:END`` (0-based, END excluded).

    Why: parity with the authors' tool, whose users read the four indices in QGIS.
    """
    parts = text.split(":")
    axis = {"cols": "columns", "col": "columns", "row": "rows"}.get(parts[0], parts[0])
    try:
        start, end = int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        start = end = -1
    if len(parts) != 3 or axis not in AXES or not 0 <= start < end:
        raise ConfigError(f"strip {text!r} is not columns:START:END or rows:START:END with 0 <= START < END "
                          "(0-based pixels, END excluded), e.g. columns:43455:48046")
    return Strip(axis, start, end - start)


def repair(path: Path, out: Path, strips: Sequence[Strip] | None = None, fmt: str = "cog",
           min_width: int = 16) -> RepairReport | None:
    """Write ``out``: ``path`` without its duplicated strips, the parts after each shifted inward.

    Why: the released maps' duplicated strips put every pixel beyond them off
    by the strip's width; removing them restores the map as it was before stitching.

    Args:
        path: The class map to repair.
        out: Where the repaired file goes (may be ``path`` itself: replaced atomically).
        strips: The strips to remove; ``None``: those :func:`~sinolc_dist.audit.report.audit` finds.
        fmt: ``cog`` (a Cloud-Optimised GeoTIFF) or ``gtiff`` (a tiled GeoTIFF).
        min_width: Narrowest strip searched for when ``strips`` is ``None``.

    Returns:
        What was written, or ``None`` when there is nothing to remove (nothing written).

    """
    start = time.perf_counter()
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    path, out = Path(path), Path(out)
    if strips is None:
        strips = audit(path, min_width=min_width, seams=False).strips
    if not strips:
        return None
    writable_folder(out.parent.resolve(), "output")
    with open_map(path) as (src, info):
        size = {"columns": info.width, "rows": info.height}
        for axis in AXES:
            _check_cuts(path, axis, size[axis], [s for s in strips if s.axis == axis])
        cols, rows = _kept(info.width, strips, "columns"), _kept(info.height, strips, "rows")
        vrt = _vrt(src, path, cols, rows, list(strips), fmt)
    width, height = sum(b - a for a, b, _ in cols), sum(b - a for a, b, _ in rows)
    _check_space(path, out, fmt, width * height / (info.width * info.height))
    _write(vrt, out, fmt, (width, height))
    return RepairReport(path, out, sorted(strips, key=lambda s: (s.axis, s.start)), width, height, fmt,
                        out.stat().st_size, time.perf_counter() - start)


def _check_cuts(path: Path, axis: str, n: int, cuts: list[Strip]) -> None:
    """Refuse strips outside the file, overlapping strips, or removing every line."""
    for cut in cuts:
        if cut.end > n:
            raise ConfigError(f"strip {axis}:{cut.start}:{cut.end} lies outside {path}, which has "
                              f"{n} {axis}: give 0 <= START < END <= {n}")
    ordered = sorted(cuts, key=lambda s: s.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.end:
            raise ConfigError(f"strips {axis}:{a.start}:{a.end} and {axis}:{b.start}:{b.end} overlap: "
                              "give each duplicated strip once")
    if sum(c.width for c in cuts) >= n:
        raise ConfigError(f"the strips remove all {n} {axis} of {path}: nothing would be left")


def _check_space(path: Path, out: Path, fmt: str, share: float) -> None:
    """Refuse to start when ``out``'s folder lacks the room the file and GDAL's temporary files need.

    The output compresses about as well as the input; a COG also needs its
    overviews, first in a temporary file (:data:`_SPACE`).  Why before, not
    after: GDAL 3.10's COG driver can crash, not fail, when the disk fills
    while it writes.
    """
    need = int(_SPACE[fmt] * share * path.stat().st_size) + 2**20
    free = shutil.disk_usage(out.parent.resolve()).free
    if free < need:
        raise InputError(f"{out.parent} has {free / 2**20:.1f} MiB free but the repaired file needs about "
                         f"{need / 2**20:.1f} MiB there while it is written: free space or choose another "
                         "folder")


def _kept(n: int, strips: Sequence[Strip], axis: str) -> list[tuple[int, int, int]]:
    """``(src0, src1, dst0)`` of each kept run of lines along ``axis``, in order."""
    kept, at, dst = [], 0, 0
    for cut in sorted((s for s in strips if s.axis == axis), key=lambda s: s.start):
        if cut.start > at:
            kept.append((at, cut.start, dst))
            dst += cut.start - at
        at = cut.end
    if at < n:
        kept.append((at, n, dst))
    return kept


def _vrt(src: rasterio.io.DatasetReader, path: Path, cols: list[tuple[int, int, int]],
         rows: list[tuple[int, int, int]], strips: list[Strip], fmt: str) -> str:
    """The VRT (XML text) of the repaired raster over ``src``, written as ``fmt``."""
    width, height = sum(b - a for a, b, _ in cols), sum(b - a for a, b, _ in rows)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = src.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in src.transform.to_gdal())
    removed = [{"axis": s.axis, "start": s.start, "end": s.end}
               for s in sorted(strips, key=lambda s: (s.axis, s.start))]
    tags = {**src.tags(), REPAIRED_TAG: json.dumps(removed)}
    tags.pop("OVERVIEW_RESAMPLING", None)
    if fmt == "cog":  # its levels are made here (audit.overviews)
        tags["OVERVIEW_RESAMPLING"] = "NEAREST"
    _metadata(root, tags)
    band = ET.SubElement(root, "VRTRasterBand", dataType=_gdal_type(src.dtypes[0]), band="1")
    if src.descriptions[0]:
        ET.SubElement(band, "Description").text = src.descriptions[0]
    if src.nodata is not None:
        ET.SubElement(band, "NoDataValue").text = repr(src.nodata)
    _metadata(band, src.tags(1))
    _colour_table(src, band)
    rat = _rat(path)
    if rat is not None:
        band.append(rat)
    block_rows, block_cols = src.block_shapes[0]
    for r0, r1, rd in rows:
        for c0, c1, cd in cols:
            source = ET.SubElement(band, "SimpleSource")
            ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = str(path.resolve())
            ET.SubElement(source, "SourceBand").text = "1"
            ET.SubElement(source, "SourceProperties", RasterXSize=str(src.width), RasterYSize=str(src.height),
                          DataType=_gdal_type(src.dtypes[0]), BlockXSize=str(block_cols),
                          BlockYSize=str(block_rows))
            size = {"xSize": str(c1 - c0), "ySize": str(r1 - r0)}
            ET.SubElement(source, "SrcRect", xOff=str(c0), yOff=str(r0), **size)
            ET.SubElement(source, "DstRect", xOff=str(cd), yOff=str(rd), **size)
    return ET.tostring(root, encoding="unicode")


def _gdal_type(dtype: str) -> str:
    """GDAL's name of an integer numpy dtype."""
    return {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
            "int32": "Int32", "uint64": "UInt64", "int64": "Int64"}[dtype]


def _metadata(parent: ET.Element, tags: dict[str, str]) -> None:
    """Tags as a VRT ``Metadata`` element (skipped when there are none)."""
    if tags:
        meta = ET.SubElement(parent, "Metadata")
        for key, value in tags.items():
            ET.SubElement(meta, "MDI", key=key).text = value


def _colour_table(src: rasterio.io.DatasetReader, band: ET.Element) -> None:
    """The file's colour table (and palette interpretation), when it has one."""
    try:
        colormap = src.colormap(1)
    except ValueError:
        return
    ET.SubElement(band, "ColorInterp").text = "Palette"
    table = ET.SubElement(band, "ColorTable")
    for code in range(max(colormap) + 1):
        r, g, b, a = colormap.get(code, (0, 0, 0, 0))
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))


def _rat(path: Path) -> ET.Element | None:
    """Band 1's raster attribute table from the file's ``.aux.xml`` (GDAL's PAM side file), if any."""
    aux = Path(f"{path}.aux.xml")
    if not aux.exists():
        return None
    try:
        root = ET.parse(aux).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"cannot read {aux} ({exc}): fix or remove this side file, then rerun") from None
    for band in root.iter("PAMRasterBand"):
        if band.get("band", "1") == "1":
            return band.find("GDALRasterAttributeTable")
    return None


def _write(vrt: str, out: Path, fmt: str, size: tuple[int, int]) -> None:
    """GDAL copies the VRT to a partial file beside ``out``; validated, it is renamed with its .aux.xml.

    For a COG the overview levels are made first (:func:`~sinolc_dist.audit.overviews.write_levels`)
    and declared in the VRT, so the COG driver only compresses them.
    """
    caught: list[str] = []
    stale = Path(f"{out}.aux.xml")
    try:
        with replacing(out, ".tif") as partial:
            source = partial_path(out, ".vrt")
            source.write_text(vrt, encoding="utf-8")
            with caught_gdal_errors() as caught, rasterio.Env(GDAL_CACHEMAX=GDAL_ENV["GDAL_CACHEMAX"]):
                options = dict(_OPTIONS[fmt])
                if fmt == "cog":
                    options.update(_cog_levels(source, vrt, size))
                rasterio.shutil.copy(source, partial, driver="COG" if fmt == "cog" else "GTiff", **options)
            if caught:  # GDAL may finish a file whose writes failed: never rename one into place
                raise OSError(caught[0])
            if fmt == "cog":
                valid, errors, _ = cog_validate(partial, quiet=True)
                if not valid:
                    raise RuntimeError(f"rio-cogeo rejects the COG made for {out}: {'; '.join(errors)}")
            aux = Path(f"{partial}.aux.xml")
            if aux.exists():
                os.replace(aux, stale)
            else:
                stale.unlink(missing_ok=True)  # an old side file would lend the new file a stale RAT
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        detail = caught[0] if caught else str(exc)
        raise InputError(f"writing {out} failed ({detail}); nothing was left under that name: free space or "
                         "fix access there, then rerun repair") from None


def _cog_levels(source: Path, vrt: str, size: tuple[int, int]) -> dict[str, object]:
    """Make the levels beside ``source`` (text ``vrt``, ``size`` px), declare them in it; the options.

    The level files are named after the partial file, so :func:`~sinolc_dist.files.replacing`
    removes them whatever happens.
    """
    tile, factors = layout(*size)
    if not factors:
        return {"BLOCKSIZE": tile, "OVERVIEWS": "NONE"}
    levels = write_levels(source, source.with_suffix(""), factors, tile)
    source.write_text(with_overviews(vrt, levels), encoding="utf-8")
    return {"BLOCKSIZE": tile, "OVERVIEWS": "FORCE_USE_EXISTING"}

