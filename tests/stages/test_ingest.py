"""The ingest stage on a LocalCluster: chunks equal rasterio's warp, resume, failures, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio.shutil

from sinolc_dist.errors import ChunkFailures, InputError
from sinolc_dist.grid import Window
from sinolc_dist.imagery.sources import ImageryIndex
from sinolc_dist.imagery.warp import read_window
from sinolc_dist.models.checkpoint import ModelSpec, save_checkpoint
from sinolc_dist.models.l2hnet import L2HNet
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, StateStore
from sinolc_dist.stages.ingest import IngestRequest, ingest
from tests.imagery.imagery_factory import (
    GRID,
    REGION,
    cluster_yaml,
    reference,
    standard_scenes,
    workflow_yaml,
    write_scene,
    write_tiles,
)

# rasterio 1.4 warns spuriously when two worker threads reproject at once (see ingest/warp.py).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Dataset has no geotransform:rasterio.errors.NotGeoreferencedWarning"),
]


@pytest.fixture
def setup(tmp_path):
    scenes = standard_scenes(tmp_path / "scenes")
    return {
        "scenes": scenes,
        "req": IngestRequest(tmp_path / "run", (str(tmp_path / "scenes" / "*.tif"), str(tmp_path / "tiles")),
                             REGION, str(workflow_yaml(tmp_path / "wf.yaml")),
                             str(cluster_yaml(tmp_path / "cl.yaml")), zoom=17, resampling="nearest"),
    }


def assert_chunks_equal_reference(run_dir, scenes) -> None:
    arr = stores.open_array(run_dir / "input.zarr", GRID)
    for cid in GRID.chunks_in(GRID.full_window):
        win = GRID.chunk_window(cid)
        assert np.array_equal(stores.read_window(arr, win), reference(scenes, win)), cid.key


def test_ingest_equals_reference_and_resumes(setup):
    req, scenes = setup["req"], setup["scenes"]
    summary = ingest(req)
    assert summary.planned == 16 and summary.report.done == 16 and summary.report.failed == 0
    assert summary.sources == 5 and summary.indexed == 5
    assert_chunks_equal_reference(req.run_dir, scenes)
    assert (req.run_dir / "imagery-index.json").exists() and not (req.run_dir / "state.sqlite").exists()
    # Reading straight from the index gives the stored pixels.
    index = ImageryIndex.load(req.run_dir / "imagery-index.json")
    win = GRID.chunk_window(next(iter(GRID.chunks_in(GRID.full_window))))
    stored = stores.read_window(stores.open_array(req.run_dir / "input.zarr", GRID), win)
    assert np.array_equal(read_window(index, GRID, win), stored)
    # A second call reads no file and does nothing.
    again = ingest(req)
    assert again.report.done == 0 and again.skipped == 16 and again.indexed == 0


def test_corrupt_files_fail_their_chunks_then_complete(setup, tmp_path):
    req, scenes = setup["req"], setup["scenes"]
    folder = tmp_path / "scenes"
    # E, a GeoTIFF cut after its first 200 bytes, cannot even be opened: its footprint is unknown.
    e = write_scene(folder / "e_extra.tif", "EPSG:32650", Window(720, 560, 1000, 760), 1.0, 9)
    good_e = e.path.read_bytes()
    e.path.write_bytes(good_e[:200])
    with pytest.raises(InputError, match=r"cannot open 1 imagery file\(s\), e\.g\. .*e_extra\.tif .*nothing"):
        ingest(req)
    assert not req.run_dir.exists()
    e.path.write_bytes(good_e)
    # B becomes a COG truncated at 60 %: its header reads, its last tiles do not.
    b_path = folder / "b_utm50.tif"
    rasterio.shutil.copy(b_path, tmp_path / "b_cog.tif", driver="COG", BLOCKSIZE=128)
    good_b = (tmp_path / "b_cog.tif").read_bytes()
    b_path.write_bytes(good_b[: int(len(good_b) * 0.6)])
    with pytest.raises(ChunkFailures, match=r"b_utm50\.tif") as info:
        ingest(req)
    summary = info.value.summary
    assert list(summary.failing_files) == [str(b_path)] and not summary.unreadable
    assert summary.report.retried == 0  # a corrupt file fails the same way again: not retried
    with StateStore(RunDir(req.run_dir).ingest_state) as state:
        records = list(state.records())
    failed = [r for r in records if r.status == FAILED]
    assert failed and any(r.status == DONE for r in records)
    assert all(str(b_path) in r.error and r.attempts == 1 for r in failed)
    assert all(r.chunk.col >= 1 for r in failed)  # only chunks that B covers
    # E, indexed now, is cut again: the chunks of its known footprint fail, naming it.
    e.path.write_bytes(good_e[:200])
    with pytest.raises(ChunkFailures, match=r"e_extra\.tif") as info:
        ingest(req)
    assert list(info.value.summary.unreadable) == [str(e.path)]
    assert str(e.path) in info.value.summary.failing_files
    # The files are replaced: the same command completes the failed chunks and E's.
    b_path.write_bytes(good_b)
    e.path.write_bytes(good_e)
    done = ingest(req)
    assert done.redone >= len(failed) and done.report.failed == 0 and not done.unreadable
    c, b, a, d, tiles = scenes
    assert_chunks_equal_reference(req.run_dir, [c, b, a, d, e, tiles])


def test_replaced_tile_is_picked_up_by_the_same_command(setup, tmp_path):
    req = setup["req"]
    tiles = write_tiles(tmp_path / "xyz", Window(900, 900, 1000, 1000), 5)
    req = IngestRequest(tmp_path / "xyz-run", (str(tiles.path),), REGION, req.workflow, req.cluster, zoom=17,
                        resampling="nearest")
    tile = sorted((tiles.path / "17").glob("*/*.png"))[-1]
    good = tile.read_bytes()
    tile.write_bytes(good[:60] + bytes(5000) + good[5060:])  # a damaged deflate stream
    with pytest.raises(ChunkFailures, match=r"\.png") as info:
        ingest(req)
    report = info.value.summary.report
    assert report.failed >= 1 and report.retried == 0  # deterministic: recorded failed at once
    assert all("CPLZLibInflate" in e for e in report.errors.values())  # GDAL's reason, not "see previous"
    tile.write_bytes(good)
    done = ingest(req)  # the same command, no --failed: the rewritten tile's chunks are redone
    assert done.redone == report.failed and done.report.done == report.failed and done.report.failed == 0
    assert_chunks_equal_reference(req.run_dir, [tiles])


def test_bad_input_is_refused_before_any_write(setup, tmp_path):
    req = setup["req"]
    cases = [((str(tmp_path / "none" / "*.tif"),), "no imagery matches")]
    plain = tmp_path / "plain.tif"
    with rasterio.open(setup["scenes"][1].path) as src:
        profile, data = src.profile | {"crs": None}, src.read()
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(data)
    cases.append(((str(plain),), r"plain\.tif has no CRS"))
    for imagery, message in cases:
        with pytest.raises(InputError, match=message):
            ingest(IngestRequest(req.run_dir, imagery, REGION, req.workflow, req.cluster))
    four = tmp_path / "rgbn.pt"
    save_checkpoint(four, L2HNet(bands=4, classes=11, width=16),
                    ModelSpec(width=16, bands=("red", "green", "blue", "nir"), mean=(1,) * 4, std=(1,) * 4))
    wf4 = workflow_yaml(tmp_path / "wf4.yaml", checkpoint=str(four))
    with pytest.raises(InputError, match=r"has 3 image band.* model takes 4"):
        ingest(IngestRequest(req.run_dir, req.imagery[:1], REGION, str(wf4), req.cluster))
    assert not req.run_dir.exists()
    proc = subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "ingest", "--imagery",
         str(tmp_path / "none" / "*.tif"), "--region", REGION, "--run-dir", str(req.run_dir)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no imagery matches"), proc.stderr
    assert not req.run_dir.exists()
