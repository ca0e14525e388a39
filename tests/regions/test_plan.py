"""The plan: a region's chunks and their cost, and the plan recorded in a run directory."""

from __future__ import annotations

import json

import pytest

from sinolc_dist.grid import DEGREE_METRE, ChunkId, Grid, geographic_grid
from sinolc_dist.regions.plan import INPUT_RATIO, OUTPUT_RATIO, make_plan, record_plan
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import PENDING, StateStore
from tests.regions.ellipsoid import grs80_cell_km2

#: 2 m Albers pixels, 16 km chunks: a 1° box is a few dozen chunks.
ALBERS_2M = Grid(resolution=2.0, chunk=8192, block=512)
#: A 1° x 1° box on land, shared by Hubei, Hunan and Jiangxi.
BOX = "bbox:113.0,29.0,114.0,30.0"


@pytest.fixture(scope="module")
def plan():
    return make_plan(BOX, ALBERS_2M, gpus=4, px_per_s=2.0e7, bands=3)


def test_the_provinces_of_a_box_add_up_to_its_area_on_the_ellipsoid(plan):
    assert [r.adcode for r in plan.rows] == ["360000", "420000", "430000"]
    assert [r.name for r in plan.rows] == ["Jiangxi (江西省)", "Hubei (湖北省)", "Hunan (湖南省)"]
    assert plan.total.land_km2 == pytest.approx(sum(r.land_km2 for r in plan.rows), rel=1e-12)
    assert plan.total.land_km2 == pytest.approx(grs80_cell_km2(29.0, 30.0, 1.0), rel=1e-6)
    assert plan.rows[0].land_km2 < 0.01 * plan.total.land_km2  # Jiangxi only touches its corner


def test_costs_follow_from_the_land_area_and_the_pixel(plan):
    for row in (*plan.rows, plan.total):
        pixels = row.land_km2 * 1e6 / 2.0**2  # 4 m² pixels
        assert row.pixels == pytest.approx(pixels, rel=1e-12)
        assert row.input_gb == pytest.approx(3 * pixels / 1e9, rel=1e-12)
        assert row.input_gb_compressed == pytest.approx(3 * pixels / 1e9 / INPUT_RATIO, rel=1e-12)
        assert row.output_gb == pytest.approx(pixels / 1e9, rel=1e-12)
        assert row.output_gb_compressed == pytest.approx(pixels / 1e9 / OUTPUT_RATIO, rel=1e-12)
        assert row.gpu_hours == pytest.approx(pixels / 2.0e7 / 3600, rel=1e-12)
    assert plan.wall_hours == pytest.approx(plan.total.gpu_hours / 4, rel=1e-12)
    assert plan.read_gb_per_s == pytest.approx(plan.total.input_gb_compressed / (plan.wall_hours * 3600))


def test_chunks_cover_the_box_once_tagged_with_their_provinces(plan):
    chunks = plan.chunks()
    ids = [cid for cid, _ in chunks]
    assert ids == sorted(set(ids)) and len(ids) == plan.total.chunks == len(plan.selection)
    # 16.4 km chunks over a box of about 97 x 111 km: from 7 x 7 to 9 x 9 of them.
    assert 49 <= len(ids) <= 81
    assert all(provinces for _, provinces in chunks)
    assert all(isinstance(cid, ChunkId) and ALBERS_2M.contains(cid) for cid in ids)
    for row in plan.rows:
        assert row.chunks == sum(row.adcode in provinces for _, provinces in chunks)
    assert sum(r.chunks for r in plan.rows) > plan.total.chunks  # chunks on a border count for both


def test_a_lonlat_grid_counts_pixels_of_one_metre_at_the_equator():
    grid = geographic_grid(chunk=4096)
    assert grid.resolution == DEGREE_METRE
    box = make_plan(BOX, grid)
    assert box.total.pixels == pytest.approx(box.total.land_km2 * 1e6, rel=1e-9)  # 1 m² each, nominally
    assert box.total.land_km2 == pytest.approx(grs80_cell_km2(29.0, 30.0, 1.0), rel=1e-6)


def test_record_plan_writes_plan_json_and_the_state_once(plan, tmp_path):
    rundir = RunDir(tmp_path / "run").create()
    assert record_plan(plan, rundir) == plan.total.chunks
    doc = json.loads(rundir.plan.read_text(encoding="utf-8"))
    assert doc["region"] == BOX and doc["region_kind"] == "bbox" and doc["gpus"] == 4
    assert Grid.from_dict(doc["grid"]) == ALBERS_2M
    assert [p["adcode"] for p in doc["provinces"]] == ["360000", "420000", "430000"]
    assert doc["total"]["chunks"] == plan.total.chunks
    assert doc["wall_hours"] == pytest.approx(plan.total.gpu_hours / 4)
    assert doc["read_gb_per_s"] == pytest.approx(plan.read_gb_per_s)
    with StateStore(rundir.state) as state:
        records = list(state.records())
        assert state.get_meta("plan_region") == BOX
        assert state.get_meta("plan_grid") == ALBERS_2M.fingerprint
    assert [(r.chunk, r.provinces) for r in records] == plan.chunks()
    assert {r.status for r in records} == {PENDING}
    assert record_plan(plan, rundir) == 0  # again: nothing added, nothing lost
    with StateStore(rundir.state) as state:
        assert state.chunk_ids() == [cid for cid, _ in plan.chunks()]
    assert not [p for p in rundir.root.iterdir() if p.name.endswith(".partial")]
