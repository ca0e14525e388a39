"""Chunk coverage from footprints: shares, no-imagery marking, km² per province, the miss error."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import small_grid

from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId
from sinolc_dist.imagery.sources import CompositeOptions, ImageryIndex, Source
from sinolc_dist.regions.region import resolve_region
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, ChunkResult, StateStore
from sinolc_dist.stages.coverage import (
    chunk_shares,
    coverage_lines,
    province_coverage,
    record_coverage,
    require_overlap,
)

GRID = small_grid(size=(256, 256), chunk=64)  # 4 x 4 chunks of 64 m


def index_of(*boxes: tuple[float, float, float, float], crs: str = "EPSG:32650") -> ImageryIndex:
    sources = tuple(Source(f"/img/{i}.tif", "gdal", crs, b, "uint8", (1, 2, 3), None, i)
                    for i, b in enumerate(boxes))
    return ImageryIndex(GRID, CompositeOptions(), sources)


def chunk_box(row: int, col: int) -> tuple[float, float, float, float]:
    return GRID.chunk_bounds(ChunkId(row, col))


def test_shares_from_footprints():
    left, bottom, right, top = chunk_box(0, 0)
    # One file covers chunk (0, 0) whole and the left half of (0, 1); another the quarter of (3, 3).
    a = (left, bottom, right + 32, top)
    l3, b3, *_ = chunk_box(3, 3)
    b = (l3, b3, l3 + 32, b3 + 32)
    shares = chunk_shares(GRID, GRID.chunks_in(GRID.full_window), index_of(a, b))
    assert shares[ChunkId(0, 0)] == 1.0
    assert shares[ChunkId(0, 1)] == pytest.approx(0.5)
    assert shares[ChunkId(3, 3)] == pytest.approx(0.25)
    assert sum(s > 0 for s in shares.values()) == 3


def test_record_coverage_marks_only_unfinished_chunks(tmp_path):
    chunks = [ChunkId(0, 0), ChunkId(0, 1), ChunkId(1, 0), ChunkId(1, 1)]
    with StateStore(tmp_path / "s.sqlite") as state:
        state.add_chunks((c, ("420000",)) for c in chunks)
        state.record([ChunkResult(ChunkId(1, 0), True), ChunkResult(ChunkId(1, 1), False, error="x")])
        update = record_coverage(state, {ChunkId(0, 0): 0.5, ChunkId(0, 1): 0.0,
                                         ChunkId(1, 0): 0.0, ChunkId(1, 1): 0.0})
        status = {r.chunk: (r.status, r.coverage) for r in state.records()}
        assert update.no_imagery == 2 and update.covered == 1
        assert status[ChunkId(0, 0)] == (PENDING, 0.5)
        assert status[ChunkId(0, 1)] == (NO_IMAGERY, 0.0)
        assert status[ChunkId(1, 0)] == (DONE, 0.0)  # its output stays until the imagery gate redoes it
        assert status[ChunkId(1, 1)] == (NO_IMAGERY, 0.0)
        # Imagery arrives for a no-imagery chunk: it is pending again.
        again = record_coverage(state, {ChunkId(0, 1): 1.0})
        assert again.restored == 1 and state.count()[NO_IMAGERY] == 1
        assert {r.chunk: r.status for r in state.records()}[ChunkId(0, 1)] == PENDING
        assert state.count()[FAILED] == 0


def test_province_km2_with_and_without_imagery():
    groups = [(("420000",), 4, 3.0, 4), (("420000", "430000"), 2, 1.0, 2), (("430000",), 2, 0.0, 0)]
    rows = {r.adcode: r for r in province_coverage(groups, {"420000": 600.0, "430000": 400.0})}
    assert rows["420000"].km2_with == pytest.approx(600 * 4 / 6) and not rows["420000"].unknown
    assert rows["430000"].km2_with == pytest.approx(400 * 1 / 4) and rows["430000"].unknown
    assert rows["total"].km2_with + rows["total"].km2_without == pytest.approx(1000.0)
    lines = coverage_lines([replace(rows["420000"], name="Hubei"), rows["430000"]])
    assert lines[0] == "imagery: Hubei: 400 km² with imagery (67 %), 200 km² without"
    assert "coverage unknown" in lines[1]


def test_imagery_outside_the_region_names_both():
    region = resolve_region("bbox:9.0,30.0,10.0,31.0")  # far west of every footprint here
    index = index_of(chunk_box(0, 0), crs="EPSG:32633")
    with pytest.raises(InputError, match=r"CRS EPSG:32633\) lies at lon .* outside region 'bbox:9"):
        require_overlap(index, region, GRID)


def test_run_on_a_store_the_ingest_left_empty_for_the_region_is_refused(tmp_path):
    from sinolc_dist.rundir.layout import RunDir
    from sinolc_dist.stages.coverage import apply_run_coverage

    rundir = RunDir(tmp_path / "run").create()
    index_of(chunk_box(0, 0)).save(rundir.imagery_index)  # a footprint over chunk (0, 0) ...
    chunks = [(ChunkId(0, 0), ("420000",)), (ChunkId(0, 1), ("420000",))]
    with StateStore(rundir.ingest_state) as ingest:  # ... that the ingest (of another region) never wrote
        ingest.add_chunks(chunks[1:])
        ingest.mark_no_imagery([ChunkId(0, 1)])
    with StateStore(rundir.state) as state:
        state.add_chunks(chunks)
        with pytest.raises(InputError, match=r"ingested store .* holds no imagery for any of the 2 chunk"):
            apply_run_coverage(rundir, GRID, state, direct=False)
        assert state.count()[PENDING] == 2  # nothing recorded
        # Read directly, the same footprint gives chunk (0, 0) its imagery.
        notes = apply_run_coverage(rundir, GRID, state, direct=True)
        assert notes == ["1 chunk(s) have no imagery (recorded no-imagery, not classified)"]
        assert {r.chunk: r.coverage for r in state.records()} == {ChunkId(0, 0): 1.0, ChunkId(0, 1): 0.0}
