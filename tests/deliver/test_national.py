"""The national products over a run's provincial COGs: statistics, VRT, quicklooks, STAC catalog."""

from __future__ import annotations

import hashlib
import json

import pytest
import shapely
from pystac.validation import JsonSchemaSTACValidator, validate_dict

from sinolc_dist.deliver.mosaics import Deliveries, mosaic_run
from sinolc_dist.deliver.national import cog_tags, delivered_files, write_national
from sinolc_dist.errors import InputError
from sinolc_dist.regions.region import province_geometries
from sinolc_dist.rundir.state import DONE, StateStore
from tests.deliver.test_mosaics import border_grid, make_run
from tests.deliver.test_stac import no_network  # noqa: F401  (a fixture: no test reaches the network)

pytestmark = pytest.mark.usefixtures("no_network")


def test_rewritten_over_every_file_present_after_each_province(tmp_path):
    rundir = make_run(tmp_path / "run", border_grid())
    mosaic_run(rundir, provinces=["Hubei"])
    deliveries = Deliveries(rundir)
    (hubei,) = delivered_files(rundir, deliveries.region.provinces).values()
    assert cog_tags(hubei)["SINOLC_COMPLETE"] == "yes"
    stats = json.loads((rundir.stats / "classes_km2.json").read_text())
    assert [p["adcode"] for p in stats["provinces"]] == ["420000"]
    mosaic_run(rundir, provinces=["Hunan"])
    config = rundir.read_config()
    geoms = province_geometries(["420000", "430000"])

    def chunks_of(code):
        with StateStore(rundir.state) as state:
            return [r.chunk for r in state.records(code) if r.status == DONE]

    notes = write_national(rundir, config, "r1", deliveries.region.provinces, geoms, chunks_of)
    stats = json.loads((rundir.stats / "classes_km2.json").read_text())
    assert [p["adcode"] for p in stats["provinces"]] == ["420000", "430000"]
    assert any(n.startswith("national mosaic: ") for n in notes)
    assert {p.name for p in rundir.quicklooks.glob("*.png")} == {"420000_Hubei.png", "430000_Hunan.png",
                                                                 "china.png"}
    assert any(n == f"STAC catalog: {rundir.mosaics / 'catalog.json'}" for n in notes)
    items = {p.stem: json.loads(p.read_text()) for p in rundir.mosaics.glob("*.json")}
    assert {k: v["id"] for k, v in items.items()} == {
        "420000_Hubei": "r1-420000", "430000_Hunan": "r1-430000", "catalog": "r1-catalog", "collection": "r1"}


def catalog(rundir) -> dict[str, dict]:
    """Every JSON file of ``mosaics/`` by name, each checked against the core STAC schemas (offline)."""
    docs = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in rundir.mosaics.glob("*.json")}
    validator = JsonSchemaSTACValidator()
    for name, doc in docs.items():
        assert validate_dict(doc, extensions=[], validator=validator), name
    links = [ln["href"] for ln in docs["collection.json"]["links"] if ln["rel"] == "item"]
    assert sorted(links) == sorted(f"./{n}" for n in docs if n[0].isdigit())  # links match the files
    return docs


def test_the_catalog_is_kept_current_as_provinces_are_delivered_and_removed(tmp_path):
    rundir = make_run(tmp_path / "run", border_grid())
    mosaic_run(rundir, provinces=["Hubei"])
    first = catalog(rundir)
    assert set(first) == {"catalog.json", "collection.json", "420000_Hubei.json"}
    (hubei_box,) = first["collection.json"]["extent"]["spatial"]["bbox"]
    assert hubei_box == first["420000_Hubei.json"]["bbox"]
    mosaic_run(rundir, provinces=["Hunan"])
    second = catalog(rundir)
    assert {"420000_Hubei.json", "430000_Hunan.json"} < set(second)
    (both,) = second["collection.json"]["extent"]["spatial"]["bbox"]
    assert shapely.box(*both).contains(shapely.box(*hubei_box)) and both != hubei_box  # the extent grew
    assert second["collection.json"]["id"] == first["collection.json"]["id"]  # one run, one Collection

    item, cog = rundir.mosaics / "420000_Hubei.json", rundir.mosaics / "420000_Hubei.tif"
    doc = json.loads(item.read_text())
    doc["assets"]["data"]["file:checksum"] = "1220" + "0" * 64  # what an unchanged file would keep
    item.write_text(json.dumps(doc))
    cog.unlink()
    mosaic_run(rundir, provinces=["Hubei"])  # delivered again: a new file, hashed again
    third = catalog(rundir)["420000_Hubei.json"]["assets"]["data"]
    assert third["file:checksum"] == "1220" + hashlib.sha256(cog.read_bytes()).hexdigest()
    assert third["sinolc:file_mtime_ns"] == cog.stat().st_mtime_ns

    (rundir.mosaics / "430000_Hunan.tif").unlink()
    Deliveries(rundir).national()
    assert set(catalog(rundir)) == {"catalog.json", "collection.json", "420000_Hubei.json"}


def test_a_cog_that_cannot_be_read_is_named(tmp_path):
    rundir = make_run(tmp_path / "run", border_grid())
    mosaic_run(rundir)
    (rundir.mosaics / "430000_Hunan.tif").write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match=r"^cannot read the COG .*430000_Hunan\.tif"):
        Deliveries(rundir).national()
