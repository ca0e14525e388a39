"""Ingest feeds inference: chunks without ingested imagery wait, re-ingested chunks are redone."""

from __future__ import annotations

import pytest

from sinolc_dist.errors import ChunkFailures
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, PENDING, StateStore
from sinolc_dist.stages import infer
from sinolc_dist.stages.ingest import IngestRequest, ingest
from tests.imagery.imagery_factory import GRID, REGION, cluster_yaml, standard_scenes, workflow_yaml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Dataset has no geotransform:rasterio.errors.NotGeoreferencedWarning"),
]


def test_run_waits_for_imagery_and_redoes_reingested_chunks(tmp_path):
    import rasterio.shutil

    standard_scenes(tmp_path / "scenes")
    wf, cl = str(workflow_yaml(tmp_path / "wf.yaml")), str(cluster_yaml(tmp_path / "cl.yaml"))
    b_path = tmp_path / "scenes" / "b_utm50.tif"
    rasterio.shutil.copy(b_path, tmp_path / "b_cog.tif", driver="COG", BLOCKSIZE=128)
    good_b = (tmp_path / "b_cog.tif").read_bytes()
    b_path.write_bytes(good_b[: int(len(good_b) * 0.6)])  # corrupt: chunks meeting B fail in ingest
    req = IngestRequest(tmp_path / "run", (str(tmp_path / "scenes" / "*.tif"), str(tmp_path / "tiles")),
                        REGION, wf, cl, zoom=17, resampling="nearest")
    with pytest.raises(ChunkFailures):
        ingest(req)
    # Make some ingest chunks pending again, as if the ingest had been interrupted.
    rundir = RunDir(req.run_dir)
    with StateStore(rundir.ingest_state) as state:
        waiting = state.chunk_ids(DONE)[:3]
        state.reset(waiting)
        ingest_failed = state.chunk_ids(FAILED)
    run_req = infer.RunRequest(rundir.root, REGION, wf, cl, mosaic=False)
    # The run classifies what is ingested, then ends non-zero naming why the rest is left pending.
    left = len(waiting) + len(ingest_failed)
    with pytest.raises(ChunkFailures, match=rf"{left} left pending without ingested imagery "
                                            rf"\({len(ingest_failed)} failed, {len(waiting)} pending in "
                                            r"ingest\.sqlite\): complete `sinolc-dist ingest`") as info:
        infer.run(run_req)
    summary = info.value.summary
    assert summary.report.done == len(list(GRID.chunks_in(GRID.full_window))) - left
    assert any("no ingested imagery yet" in n for n in summary.notes)
    with StateStore(rundir.state) as state:
        assert set(state.chunk_ids(PENDING)) == set(waiting) | set(ingest_failed)
    # B is repaired and A written again; after the ingest the waiting chunks and those A changed run.
    b_path.write_bytes(good_b)
    a_path = tmp_path / "scenes" / "a_utm49.tif"
    a_path.write_bytes(a_path.read_bytes())
    ingest(req)
    again = infer.run(run_req)
    assert again.report.done >= left
    assert any("imagery was ingested again" in n for n in again.notes)
    with StateStore(rundir.state) as state:
        assert state.count()[PENDING] == 0


def test_run_reads_imagery_directly_like_ingest(tmp_path):
    import numpy as np
    from conftest import run_output

    standard_scenes(tmp_path / "scenes")
    wf, cl = str(workflow_yaml(tmp_path / "wf.yaml")), str(cluster_yaml(tmp_path / "cl.yaml"))
    sources = (str(tmp_path / "scenes" / "*.tif"), str(tmp_path / "tiles"))
    # Reference: ingest, then classify the input store.
    ingest(IngestRequest(tmp_path / "ingested", sources, REGION, wf, cl, zoom=17))
    infer.run(infer.RunRequest(tmp_path / "ingested", REGION, wf, cl, mosaic=False))
    # Direct: no input store at all.
    direct = infer.run(infer.RunRequest(tmp_path / "direct", REGION, wf, cl, mosaic=False,
                                              imagery=sources, zoom=17))
    assert direct.report.done == len(list(GRID.chunks_in(GRID.full_window)))
    assert not (tmp_path / "direct" / "input.zarr").exists()
    assert (tmp_path / "direct" / "imagery-index.json").exists()
    for run_dir in ("ingested", "direct"):  # both paths record every chunk's imagery share
        with StateStore(RunDir(tmp_path / run_dir).state) as state:
            assert all(r.coverage is not None and r.coverage > 0 for r in state.records())
    a = run_output(RunDir(tmp_path / "ingested"), GRID.full_window)
    b = run_output(RunDir(tmp_path / "direct"), GRID.full_window)
    assert np.array_equal(a == 0, b == 0)  # nodata exactly where no file covers
    # Halo windows are warped separately from chunks: GDAL's 1/8 px transform approximation
    # may move a few resampled values, so a few class labels may differ.
    assert (a == b).mean() > 0.99


def test_run_imagery_with_no_files_is_refused_before_any_write(tmp_path):
    from sinolc_dist.errors import InputError

    wf, cl = str(workflow_yaml(tmp_path / "wf.yaml")), str(cluster_yaml(tmp_path / "cl.yaml"))
    with pytest.raises(InputError, match="no imagery"):
        infer.run(infer.RunRequest(tmp_path / "run", REGION, wf, cl,
                                         imagery=(str(tmp_path / "none" / "*.tif"),)))
    assert not (tmp_path / "run").exists()
