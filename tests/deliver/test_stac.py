"""The run's STAC catalog, on real GeoTIFFs: core schemas validated offline, extension fields checked here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pystac.validation import JsonSchemaSTACValidator, validate_dict

from sinolc_dist.deliver.stac import CogInfo, Delivered, footprint, multihash, stac_classes, write_catalog
from sinolc_dist.errors import InputError
from sinolc_dist.grid import CHINA_ALBERS, LONLAT
from sinolc_dist.legend import CHESAPEAKE, SINOLC
from sinolc_dist.regions.region import province_geometries, to_crs
from tests.conftest import fill_disk

PROVINCES = {"420000": "Hubei", "430000": "Hunan"}
GEOMS = province_geometries(list(PROVINCES))
SIDE, RES = 200, 5.0
PROPS = {"run_id": "r1", "run_dir": "/runs/r1"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test at once (extension schemas are not fetched)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried the network: {args[:1]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def write_tif(folder: Path, adcode: str, at: float = 0.3, crs: str = CHINA_ALBERS) -> Path:
    """A tiled uint8 GeoTIFF on a piece of the province's border: classes inside the province, 0 outside."""
    geom = to_crs(GEOMS[adcode], crs)
    res = RES if crs == CHINA_ALBERS else RES / 111_320
    point = geom.boundary.interpolate(at, normalized=True)
    x0, y0 = point.x - SIDE * res / 2, point.y + SIDE * res / 2
    xs, ys = np.meshgrid(x0 + (np.arange(SIDE) + 0.5) * res, y0 - (np.arange(SIDE) + 0.5) * res)
    data = np.where(shapely.contains_xy(geom, xs, ys), np.arange(SIDE * SIDE).reshape(SIDE, SIDE) % 11 + 1, 0)
    path = folder / f"{adcode}_{PROVINCES[adcode]}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=SIDE, height=SIDE, count=1, dtype="uint8", crs=crs,
                       transform=Affine(res, 0, x0, 0, -res, y0), nodata=0, tiled=True, blockxsize=128,
                       blockysize=128, compress="deflate") as dst:
        dst.write(data.astype(np.uint8), 1)
        dst.update_tags(SINOLC_MODEL_SHA256="ab" * 32, SINOLC_CONFIG_SHA256="cd" * 32, SINOLC_COMPLETE="yes")
    return path


def delivered(path: Path) -> Delivered:
    adcode = path.name[:6]
    return Delivered(path, f"r1-{adcode}", f"{PROVINCES[adcode]} ({adcode})", GEOMS[adcode])


def catalogue(folder: Path, paths: list[Path], **kwargs) -> dict[str, dict]:
    """Write the catalog over ``paths``; every JSON file in the folder by name."""
    write_catalog(folder, "r1", "湖北,湖南", SINOLC, [delivered(p) for p in paths], PROPS, **kwargs)
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")}


@pytest.fixture
def two(tmp_path) -> tuple[Path, list[Path], dict[str, dict]]:
    paths = [write_tif(tmp_path, code) for code in PROVINCES]
    return tmp_path, paths, catalogue(tmp_path, paths)


def test_every_file_validates_against_the_core_schemas_offline(two):
    folder, paths, docs = two
    assert set(docs) == {"catalog.json", "collection.json", "420000_Hubei.json", "430000_Hunan.json"}
    validator = JsonSchemaSTACValidator()
    for name, doc in docs.items():
        assert validate_dict(doc, extensions=[], validator=validator), name
    assert any("projection/v2" in e for e in docs["420000_Hubei.json"]["stac_extensions"])
    catalog = pystac.Catalog.from_file(str(folder / "catalog.json"))
    (collection,) = catalog.get_children()
    assert collection.id == "r1" and isinstance(collection, pystac.Collection)
    items = sorted(collection.get_items(), key=lambda i: i.id)
    assert [i.id for i in items] == ["r1-420000", "r1-430000"]
    for item, path in zip(items, paths, strict=True):
        assert Path(item.assets["data"].get_absolute_href()) == path.resolve()
        assert item.collection_id == "r1" and item.get_root().id == catalog.id


def test_item_fields_equal_the_file_and_the_legend(two):
    _, (hubei, _), docs = two
    item = docs["420000_Hubei.json"]
    props, asset = item["properties"], item["assets"]["data"]
    with rasterio.open(hubei) as src:
        profile, data, bounds, transform = src.profile, src.read(1), src.bounds, src.transform
    assert props["proj:shape"] == [profile["height"], profile["width"]]
    assert props["proj:transform"] == list(profile["transform"])[:6] and props["proj:bbox"] == list(bounds)
    assert props["proj:code"] is None
    assert CRS.from_wkt(props["proj:wkt2"]) == CRS.from_user_input(CHINA_ALBERS)
    (band,) = asset["raster:bands"]
    assert band["nodata"] == profile["nodata"] == 0 and band["data_type"] == profile["dtype"] == "uint8"
    assert band["spatial_resolution"] == RES
    classes = asset["classification:classes"]
    assert classes[0] == {"value": 0, "name": "no_data", "title": "No data", "nodata": True}
    assert [(c["value"], c["title"]) for c in classes[1:]] == [(c, n) for c, n, _ in SINOLC.entries]
    hexes = ["{:02X}{:02X}{:02X}".format(*rgb) for _, _, rgb in SINOLC.entries]
    assert [c["color_hint"] for c in classes[1:]] == hexes
    assert classes[2]["name"] == "tree_cover"
    assert asset["file:checksum"] == "1220" + hashlib.sha256(hubei.read_bytes()).hexdigest()
    assert asset["file:size"] == hubei.stat().st_size and asset["href"] == "./420000_Hubei.tif"
    assert props["sinolc:model_sha256"] == "ab" * 32 and props["sinolc:run_id"] == "r1"
    assert props["sinolc:complete"] == "yes" and props["datetime"].endswith("Z")
    geom = shapely.geometry.shape(item["geometry"])
    rows, cols = np.nonzero(data)
    xs, ys = rasterio.transform.xy(transform, rows, cols)  # pixel centres
    lon, lat = Transformer.from_crs(CHINA_ALBERS, LONLAT, always_xy=True).transform(xs, ys)
    assert shapely.contains_xy(geom, lon, lat).all(), "the footprint leaves data out"
    assert geom.area < 0.9 * shapely.box(*item["bbox"]).area  # the province's shape, not the file's box
    assert shapely.box(*item["bbox"]).equals(shapely.box(*geom.bounds))


def test_a_whole_island_province_is_covered_by_its_footprint_of_fewer_vertices():
    for code in ("330000", "460000"):  # Zhejiang, Hainan: hundreds of islands
        geom = province_geometries([code])[code]
        bounds = to_crs(geom, CHINA_ALBERS).buffer(1000).bounds
        info = CogInfo(CRS.from_user_input(CHINA_ALBERS), (1, 0, bounds[0], 0, -1, bounds[3]), (1, 1), bounds,
                       (1.0, 1.0), "uint8", 0, {})
        area = footprint(info, geom)
        assert geom.difference(area).area == 0, code
        assert shapely.get_num_coordinates(area) < shapely.get_num_coordinates(geom)


def test_class_names_are_machine_names_and_stay_distinct():
    names = [c.name for c in stac_classes(CHESAPEAKE)]
    assert names[1:4] == ["open_water", "perennial_ice_snow", "developed_open_space"]
    assert len(set(names)) == len(names)


def test_collection_extent_is_the_union_of_items(two):
    _, _, docs = two
    coll, items = docs["collection.json"], [docs["420000_Hubei.json"], docs["430000_Hunan.json"]]
    (bbox,) = coll["extent"]["spatial"]["bbox"]
    assert bbox == [min(i["bbox"][0] for i in items), min(i["bbox"][1] for i in items),
                    max(i["bbox"][2] for i in items), max(i["bbox"][3] for i in items)]
    times = sorted(i["properties"]["datetime"] for i in items)
    assert coll["extent"]["temporal"]["interval"] == [[times[0], times[-1]]]
    assert coll["summaries"]["sinolc:model_sha256"] == ["ab" * 32] and coll["license"] == "other"
    classes = items[0]["assets"]["data"]["classification:classes"]
    assert coll["summaries"]["classification:classes"] == classes
    assert coll["item_assets"]["data"]["raster:bands"][0]["data_type"] == "uint8"
    links = {(ln["rel"], ln["href"]) for ln in coll["links"]}
    assert {("item", "./420000_Hubei.json"), ("item", "./430000_Hunan.json")} <= links
    children = [ln["href"] for ln in docs["catalog.json"]["links"] if ln["rel"] == "child"]
    assert children == ["./collection.json"]


def test_lonlat_cog_has_its_epsg_code_and_metre_resolution(tmp_path):
    path = write_tif(tmp_path, "420000", crs=LONLAT)
    props = catalogue(tmp_path, [path])["420000_Hubei.json"]
    assert props["properties"]["proj:code"] == "EPSG:4326"
    assert props["assets"]["data"]["raster:bands"][0]["spatial_resolution"] == pytest.approx(RES)


def test_checksum_kept_while_the_file_is_unchanged_else_hashed_or_taken_as_given(two):
    folder, (hubei, hunan), docs = two
    item = folder / "420000_Hubei.json"
    planted = multihash("0" * 64)
    doc = docs[item.name]
    doc["assets"]["data"]["file:checksum"] = planted
    item.write_text(json.dumps(doc))
    assert catalogue(folder, [hubei, hunan])[item.name]["assets"]["data"]["file:checksum"] == planted
    os.utime(hubei, ns=(hubei.stat().st_atime_ns, hubei.stat().st_mtime_ns + 10**9))  # changed: hashed again
    real = multihash(hashlib.sha256(hubei.read_bytes()).hexdigest())
    assert catalogue(folder, [hubei, hunan])[item.name]["assets"]["data"]["file:checksum"] == real
    given = catalogue(folder, [hubei, hunan], checksums={hubei: "f" * 64})
    assert given[item.name]["assets"]["data"]["file:checksum"] == "1220" + "f" * 64


def test_items_of_absent_files_go_and_nothing_delivered_means_no_catalog(two):
    folder, (hubei, hunan), _ = two
    hunan.unlink()
    docs = catalogue(folder, [hubei], absent=[hunan])
    assert set(docs) == {"catalog.json", "collection.json", "420000_Hubei.json"}
    items = [ln["href"] for ln in docs["collection.json"]["links"] if ln["rel"] == "item"]
    assert items == ["./420000_Hubei.json"]
    assert not list(folder.glob(".*partial*"))
    assert write_catalog(folder, "r1", "", SINOLC, [], PROPS, absent=[hubei]) is None
    assert not list(folder.glob("*.json"))


def test_a_cog_that_cannot_be_read_is_named(two):
    folder, (hubei, hunan), _ = two
    hunan.write_bytes(b"not a tiff")
    with pytest.raises(InputError, match=r"^cannot read the COG .*430000_Hunan\.tif .*its province again"):
        catalogue(folder, [hubei, hunan])


def test_a_full_or_read_only_folder_is_one_error_and_the_catalog_is_unchanged(tmpfs):
    paths = [write_tif(tmpfs, code) for code in PROVINCES]
    before = catalogue(tmpfs, paths[:1])
    fill_disk(tmpfs)
    with pytest.raises(InputError, match=r"^cannot write the STAC catalog file .*: free space or make"):
        catalogue(tmpfs, paths)
    (tmpfs / "filler").unlink()
    assert {p.name: json.loads(p.read_text()) for p in tmpfs.glob("*.json")} == before
    assert not list(tmpfs.glob(".*partial*"))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(InputError, match=r"the catalog folder .* is not writable"):
            catalogue(tmpfs, paths)
        with pytest.raises(InputError, match=r"^cannot remove .*catalog\.json.*: make .* writable"):
            write_catalog(tmpfs, "r1", "", SINOLC, [], PROPS, absent=paths)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert shutil.disk_usage(tmpfs).free > 0
