"""Point layers in GeoPackage files, written and read with the standard library's SQLite.

A GeoPackage is an SQLite database with a few required tables; a point is a
``GP`` header (magic, version, flags, SRS id, optional envelope) then WKB.
:func:`write_points` writes one lon/lat (EPSG:4326) point layer that QGIS and
GDAL open; :func:`read_points` reads the first point layer of any GeoPackage
(its CRS from ``gpkg_spatial_ref_sys``).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from sinolc_dist.errors import InputError
from sinolc_dist.files import replacing
from sinolc_dist.regions.region import gpkg_crs

_WGS84 = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
          'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]')
_SCHEMA = f"""
PRAGMA application_id = 1196444487;
PRAGMA user_version = 10300;
CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
  organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
  description TEXT);
INSERT INTO gpkg_spatial_ref_sys VALUES
  ('Undefined cartesian SRS', -1, 'NONE', -1, 'undefined', NULL),
  ('Undefined geographic SRS', 0, 'NONE', 0, 'undefined', NULL),
  ('WGS 84 geodetic', 4326, 'EPSG', 4326, '{_WGS84}', NULL);
CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
  identifier TEXT UNIQUE, description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT
  (strftime('%Y-%m-%dT%H:%M:%fZ','now')), min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER);
CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
  geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name));
"""
#: Envelope bytes by the header's envelope flag (GeoPackage 1.3, 2.1.3).
_ENVELOPE = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def _blob(lon: float, lat: float) -> bytes:
    """A little-endian GeoPackage point blob without envelope, SRS 4326."""
    return b"GP\x00\x01" + struct.pack("<i", 4326) + struct.pack("<BIdd", 1, 1, lon, lat)


def write_points(path: Path, lon: np.ndarray, lat: np.ndarray, columns: dict[str, Sequence[Any]],
                 layer: str = "points") -> None:
    """Write lon/lat points with attribute ``columns`` (name → values) as a GeoPackage, atomically."""
    names = list(columns)
    cols = "".join(f', "{n}" {"TEXT" if n == "label" else _sql_type(columns[n])}' for n in names)
    with replacing(path, ".gpkg") as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(_SCHEMA)
            con.execute(f'CREATE TABLE "{layer}" (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom POINT{cols})')
            bounds = (float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))) \
                if len(lon) else (None, None, None, None)
            con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, min_x, min_y, max_x, "
                        "max_y, srs_id) VALUES (?, 'features', ?, ?, ?, ?, ?, 4326)", (layer, layer, *bounds))
            con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'POINT', 4326, 0, 0)", (layer,))
            quoted = "".join(f', "{n}"' for n in names)
            values = zip(*(columns[n] for n in names), strict=True) if names else ((),) * len(lon)
            con.executemany(
                f'INSERT INTO "{layer}" (geom{quoted}) VALUES (?{", ?" * len(names)})',
                ((_blob(float(x), float(y)), *(_plain(v) for v in row))
                 for x, y, row in zip(lon, lat, values, strict=True)),
            )
            con.commit()
        finally:
            con.close()


def _sql_type(values: Sequence[Any]) -> str:
    """The SQLite column type of a column's values."""
    sample = next((v for v in values if v is not None), "")
    if isinstance(sample, (int, np.integer)) and not isinstance(sample, bool):
        return "INTEGER"
    return "DOUBLE" if isinstance(sample, (float, np.floating)) else "TEXT"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value SQLite stores."""
    return value.item() if isinstance(value, np.generic) else value


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray, str, list[dict[str, Any]]]:
    """The first point layer of a GeoPackage: ``x``, ``y``, its CRS (PROJ text), each row's attributes."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        layers = con.execute("SELECT table_name, column_name, srs_id, geometry_type_name "
                             "FROM gpkg_geometry_columns").fetchall()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"points file {path} is not a GeoPackage ({exc}): give a .gpkg, .geojson or .csv") \
            from None
    try:
        points = [layer for layer in layers if str(layer[3]).upper() in ("POINT", "MULTIPOINT", "GEOMETRY")]
        if not points:
            raise InputError(f"points file {path} has no point layer: give it a POINT layer")
        table, column, srs_id, _ = points[0]
        cur = con.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur]
        crs = gpkg_crs(con, srs_id)
    finally:
        con.close()
    blobs = [row.pop(column) for row in rows]
    geoms = shapely.from_wkb([_wkb(b, path) for b in blobs])
    multi = shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOINT
    first = np.where(multi, shapely.get_geometry(geoms, 0), geoms)  # a multipoint's first point
    is_point = shapely.get_type_id(first) == shapely.GeometryType.POINT
    x = np.where(is_point, shapely.get_x(np.where(is_point, first, None)), np.nan)
    y = np.where(is_point, shapely.get_y(np.where(is_point, first, None)), np.nan)
    return x.astype(float), y.astype(float), crs, rows


def _wkb(blob: bytes | None, path: Path) -> bytes | None:
    """The WKB inside a GeoPackage geometry blob (``None`` for a missing or empty geometry)."""
    if blob is None:
        return None
    if len(blob) < 8 or blob[:2] != b"GP":
        raise InputError(f"points file {path}: a geometry is not a GeoPackage blob")
    if blob[3] & 0x10:
        return None
    envelope = _ENVELOPE.get((blob[3] >> 1) & 0x07)
    if envelope is None:
        raise InputError(f"points file {path}: bad GeoPackage envelope flag {blob[3]:#x}")
    return blob[8 + envelope:]
