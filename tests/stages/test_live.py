"""The driver's live view: chunk states as the dispatch reports them, the progress line, the map refresh."""

from __future__ import annotations

import logging
import re
import time

import dask.config
import rasterio
from conftest import small_grid

from sinolc_dist.deliver.chunk_map import STATE_CODES, chunk_map_path
from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir.layout import RunDir, setup_logging
from sinolc_dist.rundir.state import ChunkResult, StateStore
from sinolc_dist.stages.dispatch import RunReport
from sinolc_dist.stages.live import LiveRun, eta_text, live_run

GRID = small_grid()
CHUNKS = [ChunkId(r, c) for r in range(2) for c in range(3)]
HUBEI, HUNAN = "420000", "430000"


def _rundir(tmp_path) -> RunDir:
    rundir = RunDir(tmp_path / "run").create()
    with StateStore(rundir.state) as state:
        state.add_chunks((c, (HUBEI,) if c.col < 2 else (HUBEI, HUNAN)) for c in CHUNKS)
        state.record([ChunkResult(CHUNKS[0], True, "w", 0.0, 1.0, "x")])  # done by an earlier driver
    return rundir


def _code(live: LiveRun, cid: ChunkId) -> int:
    return int(live.codes()[cid.row, cid.col])


def test_states_follow_submissions_retries_and_records(tmp_path):
    rundir = _rundir(tmp_path)
    live = LiveRun(rundir, rundir.state, GRID, "run")
    assert live.counts() == {"pending": 5, "running": 0, "done": 1, "failed": 0, "retried": 0,
                             "no-imagery": 0}
    live.submitted((CHUNKS[1], CHUNKS[2]), "infer-c/0/1..c/0/2-a1")
    assert _code(live, CHUNKS[1]) == STATE_CODES["running"]
    live.retrying(ChunkResult(CHUNKS[2], False, error="OSError: flaky"))
    assert _code(live, CHUNKS[2]) == STATE_CODES["retried"]
    live.submitted((CHUNKS[2],), "infer-c/0/2-a2")  # the retry in flight stays "retried"
    assert _code(live, CHUNKS[2]) == STATE_CODES["retried"]
    assert live.chunk(CHUNKS[2]) | {"provinces": None} == {
        "id": "c/0/2", "state": "retried", "attempts": 1, "seconds": 0.0, "provinces": None,
        "task": "infer-c/0/2-a2", "retry_error": "OSError: flaky"}
    live.recorded([ChunkResult(CHUNKS[1], True, "w", 0.0, 2.5, "x"),
                   ChunkResult(CHUNKS[2], True, "w", 0.0, 3.0, "x", attempts=2)])
    assert live.chunk(CHUNKS[2])["attempts"] == 2 and live.chunk(CHUNKS[2])["state"] == "done"
    assert live.chunk(CHUNKS[2])["task"] is None and live.chunk(ChunkId(9, 9)) is None
    assert sorted(live.chunk(CHUNKS[2])["provinces"]) == [HUBEI, HUNAN]
    live.recorded([ChunkResult(CHUNKS[3], False, "w", 0.0, 1.0, error="ValueError: corrupt")])
    assert live.counts()["failed"] == 1 and live.counts()["done"] == 3
    provinces = {p["adcode"]: p for p in live.provinces()}
    assert (provinces[HUBEI]["done"], provinces[HUBEI]["failed"], provinces[HUBEI]["left"]) == (3, 1, 2)
    assert provinces[HUNAN]["chunks"] == 2 and provinces[HUNAN]["done_pct"] == 50.0
    assert provinces[HUBEI]["chunks_per_h"] > 0


def test_the_progress_line_reads_well(tmp_path):
    rundir = _rundir(tmp_path)
    live = LiveRun(rundir, rundir.state, GRID, "run")
    live.started -= 10
    live.progress(RunReport(done=2, failed=1, pixels=20_000, seconds=10.0))
    line = live.line()
    expected = (r"progress: 1 done, 0 failed, 5 pending \(0 running, 0 retrying\) \| 2 done by this driver, "
                r"2,0\d\d px/s \| ETA \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 0\.0 h\)")
    assert re.fullmatch(expected, line), line
    assert eta_text(0, 1.0) == "none (nothing left)" and eta_text(5, 0.0) == "?"


def test_a_line_every_interval_in_the_driver_log_and_the_map_refreshed(tmp_path):
    rundir = _rundir(tmp_path)
    setup_logging(rundir)
    with dask.config.set({"sinolc.live.log-interval": 0.2, "sinolc.live.map-interval": 0.2}), \
            live_run(rundir, rundir.state, GRID, "run") as live:
        path = chunk_map_path(rundir)
        assert path.is_file()  # written at once
        live.submitted((CHUNKS[4],), "infer-c/1/1-a1")
        time.sleep(1.0)
        with rasterio.open(path) as src:
            assert src.read(1)[1, 1] == STATE_CODES["running"]
    for handler in logging.getLogger("sinolc_dist").handlers:
        handler.flush()
    lines = [ln for ln in (rundir.logs / "driver.log").read_text().splitlines() if "progress: " in ln]
    assert len(lines) >= 3 and "1 running" in lines[0]
    with rasterio.open(path) as src:  # the final map: what was in flight, unrecorded, is pending again
        assert src.read(1)[1, 1] == STATE_CODES["pending"]
    assert "5 pending (0 running, 0 retrying)" in lines[-1]


def test_an_ingest_has_its_own_map(tmp_path):
    rundir = _rundir(tmp_path)
    assert chunk_map_path(rundir, "ingest").name == "ingest-chunks.tif"
    assert chunk_map_path(rundir).relative_to(rundir.root).as_posix() == "status/chunks.tif"
