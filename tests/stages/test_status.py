"""`status` as users read it: the driver alive, vanished or ended, recomputed chunks, errors, ingest."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time

import pytest
from conftest import done_count, small_grid, start_driver

from sinolc_dist.deliver.chunk_map import status_maps
from sinolc_dist.grid import ChunkId, Grid, ShardId
from sinolc_dist.imagery.pixels import SourceReadError
from sinolc_dist.rundir.integrity import present_shards
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, PENDING, ChunkResult, StateStore
from sinolc_dist.stages import infer
from sinolc_dist.stages.lifecycle import RUNNING, VANISHED
from sinolc_dist.stages.status import error_cause, status, status_lines

GRID = small_grid()
CHUNKS = sorted(GRID.chunks_in(GRID.full_window))  # 5 × 5


def fill_state(path, failed: dict[ChunkId, str], done: list[ChunkId]) -> None:
    """A state of the 25 chunks of ``GRID``: ``done`` recorded done, ``failed`` failed with their errors."""
    with StateStore(path) as state:
        state.add_chunks((c, ["420000"]) for c in CHUNKS)
        state.record([ChunkResult(c, True, checksum="x") for c in done])
        state.record([ChunkResult(c, False, error=e) for c, e in failed.items()])


def _run_dir(tmp_path) -> RunDir:
    rundir = RunDir(tmp_path / "run").create()
    rundir.config.write_text(json.dumps({"grid": GRID.to_dict()}))
    return rundir


def test_one_corrupt_file_is_one_error_group(tmp_path):
    rundir = _run_dir(tmp_path)
    shard = f"{rundir.input}/image/c/0/1"
    failed = {c: f"ValueError: chunk {c.key} window ({c.row * 64}, {c.col * 64}): cannot decode {shard}\n"
                 "Traceback ..." for c in CHUNKS[:4]}
    failed[CHUNKS[4]] = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    fill_state(rundir.state, failed, CHUNKS[5:7])
    report = status(rundir.root)
    assert [(g.stage, g.file, g.chunks) for g in report.errors] == [("run", shard, 4), ("run", None, 1)]
    assert report.errors[0].cause == "ValueError: chunk c/… window (#, #): cannot decode <file>"
    assert report.total[FAILED] == 5 and report.total[DONE] == 2


def test_error_cause_reads_ingest_errors():
    error = str(SourceReadError("/data/scene 7.tif", "TIFFReadEncodedTile() failed at tile 17"))
    assert error_cause(error) == ("unreadable imagery <file> :: TIFFReadEncodedTile() failed at tile #",
                                  "/data/scene 7.tif")


def test_no_eta_without_a_driver_and_one_with_a_live_one(tmp_path):
    rundir = _run_dir(tmp_path)
    with StateStore(rundir.state) as state:
        state.add_chunks((c, ["420000"]) for c in CHUNKS)
        for c in CHUNKS[:3]:  # three chunks done a second apart: a recent rate
            state.record([ChunkResult(c, True)])
            time.sleep(0.6)
    report = status(rundir.root)
    assert not report.driver.alive and report.driver.last is None
    assert report.eta_hours is None and report.chunks_per_hour == 0.0
    assert "throughput and ETA: none (no driver is running)" in status_lines(report)
    with rundir.driver_lock():
        live = status(rundir.root)
    assert live.driver.alive and live.driver.pid == os.getpid()
    assert live.chunks_per_hour > 0 and live.eta_hours == pytest.approx(22 / live.chunks_per_hour)


def test_ingest_only_run_dir(tmp_path):
    rundir = RunDir(tmp_path / "run").create()
    (rundir.root / "ingest.json").write_text(json.dumps({"grid": GRID.to_dict(), "region": "x"}))
    bad = str(SourceReadError("/data/bad.tif", "not a TIFF"))
    fill_state(rundir.ingest_state, {c: bad for c in CHUNKS[:3]}, CHUNKS[3:10])
    report = status(rundir.root)
    assert report.stage == "ingest"
    assert report.total == {PENDING: 15, DONE: 7, FAILED: 3, "no-imagery": 0}
    assert [(g.stage, g.file, g.chunks) for g in report.errors] == [("ingest", "/data/bad.tif", 3)]


def test_pending_chunks_say_their_ingest_failed(tmp_path):
    rundir = _run_dir(tmp_path)
    fill_state(rundir.state, {}, CHUNKS[5:])  # the first five are pending in the run
    bad = str(SourceReadError("/data/bad.tif", "not a TIFF"))
    with StateStore(rundir.ingest_state) as ingest:
        ingest.add_chunks((c, ["420000"]) for c in CHUNKS)
        ingest.record([ChunkResult(c, False, error=bad) for c in CHUNKS[:2]])
        ingest.record([ChunkResult(c, True) for c in CHUNKS[3:]])  # CHUNKS[2] still pending there
    report = status(rundir.root)
    assert report.waiting_for_ingest == {"ingest failed": 2, "not ingested": 1}
    assert [(g.stage, g.file, g.chunks) for g in report.errors] == [("ingest", "/data/bad.tif", 2)]
    assert any("2 ingest failed, 1 not ingested" in line for line in status_lines(report))


def _unrecorded_shards(con: sqlite3.Connection, rundir: RunDir, grid: Grid) -> set[ShardId]:
    """Output shards written whose chunks are not recorded done."""
    rows = con.execute("SELECT row, col FROM chunks WHERE status = 'done'").fetchall()
    return present_shards(rundir.output) - {grid.shard_of(ChunkId(r, c)) for r, c in rows}


@pytest.mark.slow
def test_status_after_sigkill_then_resume(small_run_one_chunk_tasks):
    rundir, req = small_run_one_chunk_tasks["rundir"], small_run_one_chunk_tasks["req"]
    proc = start_driver(req)
    deadline = time.time() + 120
    while done_count(rundir) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    # Hold the state's write lock from the first result on: the driver records nothing more while
    # its workers write the shards in flight; kill it once one is written: that chunk is lost.
    con = sqlite3.connect(rundir.state, timeout=10, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    live = status(rundir.root)
    assert live.driver.alive and live.driver.pid == proc.pid
    assert live.driver.last is not None and live.driver.last.end == RUNNING
    grid = rundir.read_config().grid
    while not _unrecorded_shards(con, rundir, grid) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    con.rollback()
    con.close()
    report = status(rundir.root)
    assert not report.driver.alive
    assert report.driver.last.end == VANISHED and report.driver.last.pid == proc.pid
    assert report.eta_hours is None and report.chunks_per_hour == 0.0
    assert report.recomputed == 0
    with StateStore(rundir.state) as state:
        done, planned = set(state.chunk_ids(DONE)), state.chunk_ids()
    written = present_shards(rundir.output)
    lost = {c for c in planned if c not in done and grid.shard_of(c) in written}
    assert report.total[DONE] == len(done) and report.total[PENDING] == 12 - len(done)
    assert lost, "the kill came after the shard was recorded"
    assert any("vanished: no end recorded" in line for line in status_lines(report))
    infer.run(req)  # resume, with the mosaic stage
    after = status(rundir.root)
    assert after.recomputed == len(lost) and after.total[DONE] == 12
    assert after.driver.last.end == "finished" and not after.driver.alive
    log = (rundir.logs / "driver.log").read_text()
    assert f"driver started: run, PID {proc.pid}" in log
    assert f"resume after a vanished driver (run, PID {proc.pid}" in log
    assert f"{len(lost)} chunk(s) it computed were not recorded" in log
    assert "mosaic stage: started" in log  # the province was released as its last chunk was recorded:
    assert len(re.findall(r"province \w+ \(\d{6}\) delivered: \S+\.tif", log)) == 1


def test_status_names_the_chunk_map_once_written(tmp_path):
    rundir = _run_dir(tmp_path)
    fill_state(rundir.state, {CHUNKS[0]: "OSError: boom"}, CHUNKS[1:3])
    assert status(rundir.root).chunk_map == ""
    written = status_maps(rundir.root, tmp_path / "m.tif", driver_alive=False)
    report = status(rundir.root)
    assert report.chunk_map == str(written[-1]) and written[-1].name == "chunks.tif"
    assert any(line.startswith(f"chunk map (one pixel per chunk, for QGIS): {report.chunk_map}")
               for line in status_lines(report))
