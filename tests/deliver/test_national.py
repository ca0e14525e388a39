"""The national products over a run's provincial COGs: statistics, VRT, quicklooks, STAC items."""

from __future__ import annotations

import json

from sinolc_dist.deliver.mosaics import Deliveries, mosaic_run
from sinolc_dist.deliver.national import cog_tags, delivered_files, write_national
from sinolc_dist.regions.region import province_geometries
from sinolc_dist.rundir.state import DONE, StateStore
from tests.deliver.test_mosaics import border_grid, make_run


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
    items = {p.stem: json.loads(p.read_text()) for p in rundir.mosaics.glob("*.json")}
    assert {k: v["id"] for k, v in items.items()} == {"420000_Hubei": "r1-420000",
                                                      "430000_Hunan": "r1-430000"}
