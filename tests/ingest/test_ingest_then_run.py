"""Ingest feeds inference: chunks without ingested imagery wait, re-ingested chunks are redone."""

from __future__ import annotations

import pytest
from imagery_factory import GRID, REGION, cluster_yaml, standard_scenes, workflow_yaml

from sinolc_dist import pipeline
from sinolc_dist.errors import ChunkFailures
from sinolc_dist.ingest.run import IngestRequest, ingest
from sinolc_dist.rundir import RunDir
from sinolc_dist.state import DONE, PENDING, StateStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Dataset has no geotransform:rasterio.errors.NotGeoreferencedWarning"),
]


def test_run_waits_for_imagery_and_redoes_reingested_chunks(tmp_path):
    standard_scenes(tmp_path / "scenes")
    wf, cl = str(workflow_yaml(tmp_path / "wf.yaml")), str(cluster_yaml(tmp_path / "cl.yaml"))
    b_path = tmp_path / "scenes" / "b_utm50.tif"
    good_b = b_path.read_bytes()
    b_path.write_bytes(good_b[:300])  # unreadable: the chunks only B covers stay empty
    req = IngestRequest(tmp_path / "run", (str(tmp_path / "scenes" / "*.tif"), str(tmp_path / "tiles")),
                        REGION, wf, cl, zoom=17, resampling="nearest")
    with pytest.raises(ChunkFailures):
        ingest(req)
    # Make some ingest chunks pending again, as if the ingest had been interrupted.
    rundir = RunDir(req.run_dir)
    with StateStore(rundir.ingest_state) as state:
        waiting = state.chunk_ids(DONE)[:3]
        state.reset(waiting)
    run_req = pipeline.RunRequest(rundir.root, REGION, wf, cl, mosaic=False)
    summary = pipeline.run(run_req)
    assert summary.report.done == len(list(GRID.chunks_in(GRID.full_window))) - len(waiting)
    assert any("no ingested imagery yet" in n for n in summary.notes)
    with StateStore(rundir.state) as state:
        assert set(state.chunk_ids(PENDING)) == set(waiting)
    # The imagery is repaired and ingested again: the waiting chunks and those it changed run.
    b_path.write_bytes(good_b)
    ingest(req)
    again = pipeline.run(run_req)
    assert again.report.done >= len(waiting)
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
    pipeline.run(pipeline.RunRequest(tmp_path / "ingested", REGION, wf, cl, mosaic=False))
    # Direct: no input store at all.
    direct = pipeline.run(pipeline.RunRequest(tmp_path / "direct", REGION, wf, cl, mosaic=False,
                                              imagery=sources, zoom=17))
    assert direct.report.done == len(list(GRID.chunks_in(GRID.full_window)))
    assert not (tmp_path / "direct" / "input.zarr").exists()
    assert (tmp_path / "direct" / "imagery-index.json").exists()
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
        pipeline.run(pipeline.RunRequest(tmp_path / "run", REGION, wf, cl,
                                         imagery=(str(tmp_path / "none" / "*.tif"),)))
    assert not (tmp_path / "run").exists()
