"""Coverage before dispatch: only chunks the imagery touches run; imagery missing the region is refused."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from sinolc_dist.cli import cli
from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId, Window
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, NO_IMAGERY, StateStore
from sinolc_dist.stages import infer
from sinolc_dist.stages.ingest import IngestRequest, ingest, summary_lines
from sinolc_dist.stages.status import status, status_lines
from tests.imagery.imagery_factory import GRID, REGION, cluster_yaml, workflow_yaml, write_scene

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Dataset has no geotransform:rasterio.errors.NotGeoreferencedWarning"),
]
ALL = len(list(GRID.chunks_in(GRID.full_window)))


@pytest.fixture
def paths(tmp_path):
    return {"wf": str(workflow_yaml(tmp_path / "wf.yaml")), "cl": str(cluster_yaml(tmp_path / "cl.yaml")),
            "scenes": tmp_path / "scenes"}


def europe_scene(path) -> None:
    """A small RGB GeoTIFF in UTM 33N over central Europe (lon 15°, lat 50°)."""
    transform = Affine(1.0, 0, 500_000.0, 0, -1.0, 5_540_000.0)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as ds:
        ds.write(np.full((3, 64, 64), 120, np.uint8))


def test_only_chunks_the_imagery_touches_are_dispatched(paths, tmp_path):
    paths["scenes"].mkdir()
    write_scene(paths["scenes"] / "small.tif", "EPSG:32650", Window(20, 20, 200, 200), 1.0, 7)
    req = IngestRequest(tmp_path / "run", (str(paths["scenes"] / "*.tif"),), REGION, paths["wf"], paths["cl"])
    summary = ingest(req)
    assert summary.planned == ALL and summary.report.done == 1 and summary.no_imagery == ALL - 1
    assert "chunks no imagery touches (no-imagery, not dispatched): 15" in summary_lines(summary)
    rundir = RunDir(req.run_dir)
    with StateStore(rundir.ingest_state) as state:
        assert state.chunk_ids(DONE) == [ChunkId(0, 0)] and state.count()[NO_IMAGERY] == ALL - 1
    # The run classifies the one chunk, records the others no-imagery with coverage 0, and exits 0.
    ran = infer.run(infer.RunRequest(rundir.root, REGION, paths["wf"], paths["cl"], mosaic=False))
    assert ran.report.done == 1 and ran.report.failed == 0
    with StateStore(rundir.state) as state:
        records = {r.chunk: r for r in state.records()}
    assert 0 < records[ChunkId(0, 0)].coverage < 1 and records[ChunkId(0, 0)].status == DONE
    assert all(r.status == NO_IMAGERY and r.coverage == 0 for c, r in records.items() if c != ChunkId(0, 0))
    assert any(n.startswith("15 chunk(s) have no imagery") for n in ran.notes)
    line = next(n for n in ran.notes if n.startswith("imagery: Hubei"))
    assert "km² with imagery" in line and "km² without" in line
    report = status(rundir.root)
    hubei = next(r for r in report.coverage if r.adcode == "420000")
    assert hubei.km2_with > 0 and hubei.km2_without > 0 and report.total[NO_IMAGERY] == ALL - 1
    assert line in status_lines(report)
    # More imagery arrives: its chunks leave no-imagery, are ingested, then classified.
    write_scene(paths["scenes"] / "more.tif", "EPSG:32650", Window(800, 800, 1000, 1000), 1.0, 8)
    again = ingest(req)
    assert again.report.done == 1 and again.no_imagery == ALL - 2
    rerun = infer.run(infer.RunRequest(rundir.root, REGION, paths["wf"], paths["cl"], mosaic=False))
    assert rerun.report.done == 1 and any("covered now" in n for n in rerun.notes)


def test_imagery_missing_the_region_is_refused_before_any_write(paths, tmp_path):
    paths["scenes"].mkdir()
    europe_scene(paths["scenes"] / "utm33.tif")
    imagery = (str(paths["scenes"] / "utm33.tif"),)
    wf, cl = paths["wf"], paths["cl"]
    calls = (lambda d: infer.run(infer.RunRequest(d, REGION, wf, cl, imagery=imagery)),
             lambda d: ingest(IngestRequest(d, imagery, REGION, wf, cl)))
    for call in calls:
        with pytest.raises(InputError, match=r"EPSG:32633\) lies at lon 1[45]\.\d+.* outside region 'bbox:"):
            call(tmp_path / "run")
        assert not (tmp_path / "run").exists()
    # An ingested store filled for another place in the grid holds nothing for this run's region.
    write_scene(paths["scenes"] / "north.tif", "EPSG:32650", Window(0, 0, 200, 1024), 1.0, 9)
    ingest(IngestRequest(tmp_path / "run", (str(paths["scenes"] / "north.tif"),), REGION, paths["wf"],
                         paths["cl"]))
    south = "bbox:114.001,30.4976,114.006,30.4990"  # the grid's south rows: no footprint there
    with pytest.raises(InputError, match=r"the ingested imagery .* outside region 'bbox:114\.001"):
        infer.run(infer.RunRequest(tmp_path / "run", south, paths["wf"], paths["cl"]))
    assert not (tmp_path / "run" / "state.sqlite").exists()



def test_plan_reports_km2_with_and_without_imagery(paths, tmp_path):
    paths["scenes"].mkdir()
    write_scene(paths["scenes"] / "west.tif", "EPSG:32650", Window(0, 0, 1024, 512), 1.0, 3)
    args = ["plan", "--region", REGION, "--workflow", paths["wf"], "--run-dir", str(tmp_path / "p"),
            "--no-write", "--imagery", str(paths["scenes"] / "west.tif")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("imagery: Hubei"))
    with_, without = (float(n.replace(",", "")) for n in re.findall(r"([\d,.]+) km²", line))
    assert re.search(r"\(([4-6]\d) %\)", line)  # about half (footprints are upper bounds)
    assert with_ > 0 and without > 0  # the scene covers the region's west half only
    result = CliRunner().invoke(cli, [*args, "--json"])
    rows = {r["adcode"]: r for r in json.loads(result.output)["imagery"]}
    assert rows["420000"]["km2_with"] == pytest.approx(with_, abs=1)
    assert rows["total"]["km2_with"] + rows["total"]["km2_without"] == pytest.approx(with_ + without, abs=2)
