"""The run's STAC catalog: one Item per provincial COG, one Collection for the run, a root Catalog.

Laid out as ESA WorldCover and Impact Observatory's maps are published (on the
Planetary Computer each is one Collection of COG items under a root catalog,
the legend in ``classification:classes``), all in ``mosaics/`` beside the COGs::

    catalog.json              root Catalog: one child, the run's Collection
    collection.json           the run: extent, legend summary, item_assets
    <adcode>_<Province>.json  one Item per delivered COG (proj, raster, classification, file)

A root Catalog over the Collection lets the runs of a product be gathered
under one catalog later without rewriting any Item.  :func:`write_catalog` is
called after each province is delivered: the Items are written first, then the
Collection, then the Catalog, each file atomically, and the Items of COGs no
longer present are removed last, so every link a reader follows names a whole
file.  A COG's checksum is reused from its Item while its size and mtime are
unchanged (``sinolc:file_mtime_ns``); a new or changed file is hashed once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac
import rasterio
import shapely
from pyproj import CRS
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension, Sampling
from pystac.stac_io import DefaultStacIO
from rasterio.errors import RasterioError
from rasterio.warp import transform_geom
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from sinolc_dist import __version__
from sinolc_dist.errors import InputError
from sinolc_dist.files import atomic_write, file_sha256, writable_folder
from sinolc_dist.grid import LONLAT
from sinolc_dist.legend import NODATA, Legend

CATALOG, COLLECTION = "catalog.json", "collection.json"
#: The key of each Item's COG asset.
DATA = "data"
#: Where the COG's size and mtime are recorded beside its checksum, to reuse the checksum.
MTIME_FIELD = "sinolc:file_mtime_ns"
#: How far a footprint may stray outside its province, in degrees (~200 m).
FOOTPRINT_TOLERANCE = 0.002
#: One degree of latitude in metres (a pixel's north-south size on a lon/lat COG).
DEGREE_M = 111_320.0


@dataclass(frozen=True)
class Delivered:
    """One provincial COG to catalogue: its file, its Item's id and title, its province's lon/lat polygon."""

    path: Path
    item_id: str
    title: str
    province: BaseGeometry


@dataclass(frozen=True)
class CogInfo:
    """What a COG's header says: CRS, grid, pixel type and tags."""

    crs: CRS
    transform: tuple[float, ...]
    shape: tuple[int, int]
    bounds: tuple[float, float, float, float]
    res: tuple[float, float]
    dtype: str
    nodata: float | None
    tags: dict[str, str]


def read_cog(path: Path) -> CogInfo:
    """A COG's header; a file GDAL cannot read (or without a CRS) is one :class:`InputError` naming it."""
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise RasterioError("no CRS")
            return CogInfo(CRS.from_wkt(src.crs.to_wkt()), tuple(src.transform)[:6], src.shape,
                           tuple(src.bounds), src.res, src.dtypes[0], src.nodata, src.tags())
    except RasterioError as exc:
        reason = (str(exc) or type(exc).__name__).splitlines()[0]
        raise InputError(f"cannot read the COG {path} ({reason}): delete it and deliver its province again "
                         "(sinolc-dist mosaic --run-dir RUN --province NAME)") from None


def item_path(cog: Path) -> Path:
    """The STAC Item beside a COG."""
    return cog.with_suffix(".json")


def multihash(sha256_hex: str) -> str:
    """``file:checksum``'s multihash of a SHA-256: code 0x12, length 0x20, then the digest."""
    return f"1220{sha256_hex}"


def stac_classes(legend: Legend) -> list[Classification]:
    """The legend as ``classification:classes``: nodata (0) and each code's name, title and colour.

    ``name`` must be letters, digits, ``-`` and ``_``, so it is the class name
    made so (``Tree cover`` → ``tree_cover``; ``class_<code>`` when nothing is
    left); ``title`` is the legend's name as written.
    """
    classes = [Classification.create(value=NODATA, name="no_data", title="No data", nodata=True)]
    seen = {"no_data"}
    for code, title, rgb in legend.entries:
        name = re.sub(r"[^0-9A-Za-z]+", "_", title).strip("_").lower() or f"class_{code}"
        name = f"{name}_{code}" if name in seen else name
        seen.add(name)
        classes.append(Classification.create(value=code, name=name, title=title,
                                             color_hint="{:02X}{:02X}{:02X}".format(*rgb)))
    return classes


def _checksum(cog: Path, stat_size: int, mtime_ns: int, known: Mapping[Path, str]) -> str:
    """The COG's multihash: given in ``known``, kept from its Item while size and mtime hold, else hashed."""
    if (given := known.get(cog.resolve())) is not None:
        return multihash(given)
    try:
        old = json.loads(item_path(cog).read_text(encoding="utf-8"))["assets"][DATA]
        if old.get("file:size") == stat_size and old.get(MTIME_FIELD) == mtime_ns and old["file:checksum"]:
            return str(old["file:checksum"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no Item yet, or one from before checksums: hash the file
    return multihash(file_sha256(cog))


def footprint(info: CogInfo, province: BaseGeometry) -> BaseGeometry:
    """The lon/lat footprint of the COG's data: its province's polygon inside the file's bounds.

    Pixels outside the province are nodata, so this is where data lies.  The
    polygon is grown by :data:`FOOTPRINT_TOLERANCE` and then simplified by half
    as much, so it still covers every pixel (checked on all 34 provinces;
    simplifying by the whole margin leaves slivers out) with about a fifth of
    the boundary's vertices (141k for the 34 provinces instead of 786k).  Where the polygon misses the file (a
    boundary file other than the one it was masked with) the file's bounds are the footprint.
    """
    edge = shapely.segmentize(box(*info.bounds), max(info.bounds[2] - info.bounds[0],
                                                     info.bounds[3] - info.bounds[1]) / 20)
    bounds = shape(transform_geom(info.crs.to_wkt(), LONLAT, mapping(edge)))
    area = province.buffer(FOOTPRINT_TOLERANCE, join_style="mitre").simplify(FOOTPRINT_TOLERANCE / 2)
    area = _polygons(shapely.set_precision(area.intersection(bounds), 1e-7))
    return area if not area.is_empty else _polygons(bounds)


def _polygons(geom: BaseGeometry) -> BaseGeometry:
    """The polygons of a geometry as GeoJSON wants them: outer rings counter-clockwise (RFC 7946).

    An intersection may also hold lines and points where edges touch: those are left out.
    """
    parts = [orient(p) for p in shapely.get_parts(shapely.get_parts(geom)) if isinstance(p, Polygon)]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _resolution_m(info: CogInfo) -> float:
    """A pixel's size in metres (its north-south size on a lon/lat COG)."""
    if info.crs.is_geographic:
        return info.res[1] * DEGREE_M
    return (info.res[0] + info.res[1]) / 2 * info.crs.axis_info[0].unit_conversion_factor


def build_item(cog: Delivered, legend: Legend, properties: Mapping[str, Any],
               known: Mapping[Path, str]) -> pystac.Item:
    """A COG's Item: footprint, time, the sinolc tags and run properties, and its asset's extensions."""
    info, stat = read_cog(cog.path), cog.path.stat()
    made = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).replace(microsecond=0)
    geom = footprint(info, cog.province)
    props = {"title": cog.title, "created": pystac.utils.datetime_to_str(made),
             "sinolc:host": socket.gethostname(), **{f"sinolc:{k}": v for k, v in properties.items()},
             **{f"sinolc:{k.removeprefix('SINOLC_').lower()}": v
                for k, v in info.tags.items() if k.startswith("SINOLC_")}}
    item = pystac.Item(cog.item_id, mapping(geom), list(geom.bounds), made, props)
    epsg = info.crs.to_epsg(min_confidence=100)
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=f"EPSG:{epsg}" if epsg else None, wkt2=info.crs.to_wkt(), shape=list(info.shape),
        transform=list(info.transform), bbox=list(info.bounds))
    asset = pystac.Asset(href=f"./{cog.path.name}", title=cog.title, media_type=pystac.MediaType.COG,
                         roles=[DATA], extra_fields={MTIME_FIELD: stat.st_mtime_ns})
    item.add_asset(DATA, asset)
    _describe_pixels(asset, legend, _band(info))
    FileExtension.ext(asset, add_if_missing=True).apply(
        size=stat.st_size, checksum=_checksum(cog.path, stat.st_size, stat.st_mtime_ns, known))
    return item


def _band(info: CogInfo) -> RasterBand:
    """The COG's one band as ``raster:bands`` says it: nodata, pixel type, resolution in metres."""
    nodata = info.nodata if info.nodata is None or not float(info.nodata).is_integer() else int(info.nodata)
    return RasterBand.create(nodata=nodata, data_type=DataType(info.dtype), sampling=Sampling.AREA,
                             spatial_resolution=_resolution_m(info))


def _describe_pixels(target: pystac.Asset | pystac.ItemAssetDefinition, legend: Legend,
                     band: RasterBand) -> None:
    """The ``raster:bands`` and the legend's ``classification:classes`` of an asset (or its definition)."""
    RasterExtension.ext(target, add_if_missing=True).apply([band])
    ClassificationExtension.ext(target, add_if_missing=True).apply(classes=stac_classes(legend))


def build_collection(run_id: str, region: str, legend: Legend,
                     items: Sequence[pystac.Item]) -> pystac.Collection:
    """The run's Collection: the union of the Items' footprints and times, the legend, the asset's form."""
    west, south, east, north = zip(*(i.bbox for i in items), strict=True)
    times = sorted(i.datetime for i in items if i.datetime)
    extent = pystac.Extent(pystac.SpatialExtent([[min(west), min(south), max(east), max(north)]]),
                           pystac.TemporalExtent([[times[0], times[-1]]]))
    collection = pystac.Collection(
        run_id, f"Land cover ({legend.name} legend) of {region or 'the run'}, one Cloud-Optimised GeoTIFF "
        f"per province, made by sinolc-dist run {run_id}. The licence is that of the imagery and the model "
        "the run used.", extent, title=f"sinolc-dist run {run_id}", license="other",
        keywords=["land cover", "land use", "China"],
        providers=[pystac.Provider(f"sinolc-dist {__version__}", roles=[pystac.ProviderRole.PROCESSOR],
                                   description="national land-cover inference as a resumable Dask job")])
    definition = pystac.ItemAssetDefinition.create(
        title="land-cover classes",
        description=f"one band of class codes ({legend.name} legend), 0 = no data",
        media_type=pystac.MediaType.COG, roles=[DATA])
    collection.item_assets = {DATA: definition}
    every = RasterBand.create(nodata=NODATA, data_type=DataType.UINT8, sampling=Sampling.AREA)
    _describe_pixels(collection.item_assets[DATA], legend, every)  # the extensions need the owner set
    ClassificationExtension.summaries(collection, add_if_missing=True).classes = stac_classes(legend)
    for key in ("sinolc:model_sha256", "sinolc:config_sha256", "proj:code"):
        values = sorted({i.properties[key] for i in items if i.properties.get(key)})
        if values:
            collection.summaries.add(key, values)
    return collection


class _AtomicIO(DefaultStacIO):
    """pystac's writer, each file written atomically as readable UTF-8; a refusal is one line."""

    def json_dumps(self, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        """Indented JSON with the provinces' Chinese names as they are."""
        return json.dumps(json_dict, indent=2, ensure_ascii=False)

    def write_text_to_href(self, href: str, txt: str) -> None:
        """Write one catalog file beside its place, then rename it there."""
        path = Path(href)
        try:
            atomic_write(path, lambda f: f.write(txt))
        except OSError as exc:
            raise InputError(f"cannot write the STAC catalog file {path} ({exc.strerror or exc}): "
                             f"free space or make {path.parent} writable (the catalog there is unchanged)"
                             ) from None


def write_catalog(folder: Path, run_id: str, region: str, legend: Legend, cogs: Sequence[Delivered],
                  properties: Mapping[str, Any], absent: Iterable[Path] = (),
                  checksums: Mapping[Path, str] | None = None) -> Path | None:
    """Write the run's Catalog, Collection and an Item per delivered COG in ``folder``; returns the Catalog.

    ``properties`` go to every Item under ``sinolc:`` (run id, run folder);
    ``checksums`` maps COG paths to SHA-256 digests already known (from
    writing them), used instead of reading the file.  The Items of the COGs in
    ``absent`` are removed once nothing links them; with no COG at all the
    Catalog and Collection go too (``None`` is returned).
    Raises :class:`InputError` for a COG that cannot be read or a folder that cannot be written.
    """
    catalog_path = folder / CATALOG
    gone = [item_path(p) for p in absent]
    if cogs:
        writable_folder(folder, "catalog")
        known = {Path(p).resolve(): h for p, h in (checksums or {}).items()}
        items = [build_item(c, legend, properties, known) for c in cogs]
        collection = build_collection(run_id, region, legend, items)
        catalog = pystac.Catalog(f"{run_id}-catalog", f"The deliverables of sinolc-dist run {run_id}.",
                                 title=f"sinolc-dist run {run_id}")
        catalog.add_child(collection)
        collection.add_items(items)
        catalog.set_self_href(str(catalog_path))
        collection.set_self_href(str(folder / COLLECTION))
        for cog, item in zip(cogs, items, strict=True):
            item.set_self_href(str(item_path(cog.path)))
        catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=_AtomicIO())
    else:
        gone = [catalog_path, folder / COLLECTION, *gone]
    _remove(gone if folder.is_dir() else [])
    return catalog_path if cogs else None


def _remove(paths: Iterable[Path]) -> None:
    """Remove catalog files no longer linked (those absent are fine); a refusal is one :class:`InputError`."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise InputError(f"cannot remove {path}, a catalog file of COGs no longer there "
                             f"({exc.strerror}): make {path.parent} writable") from None
