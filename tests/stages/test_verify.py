"""A resume never trusts the state blindly, and `verify` reads every shard: lost, changed or
corrupt output is recomputed, never a traceback and never a shard left unreadable."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import prepared_run, run_output
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId, Grid, ShardId
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import check_shards, present_shards, stale_chunks
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, PENDING, StateStore
from sinolc_dist.stages import infer
from sinolc_dist.stages.verify import on_cluster, verify_run
from sinolc_dist.stages.workflow import load_profile

#: Verification reads shards only: an in-process cluster starts in a moment.
THREADS = 'local: {n_workers: 1, threads_per_worker: 2, processes: false, protocol: "tcp://"}\n'


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> dict:
    """One finished small run (no mosaic), copied by each test, and its output as the reference."""
    from conftest import WORKFLOW

    tmp = tmp_path_factory.mktemp("verify-reference")
    run = prepared_run(tmp, WORKFLOW % random_checkpoint)
    infer.run(infer.RunRequest(**{**run["req"].__dict__, "mosaic": False}))
    threads = tmp / "threads.yaml"
    threads.write_text(THREADS)
    return {**run, "reference": run_output(run["rundir"], run["scene"].window), "threads": threads}


def copy_run(finished: dict, tmp_path: Path) -> tuple[RunDir, infer.RunRequest, Grid]:
    """A fresh copy of the finished run, and the request that resumes it."""
    rundir = RunDir(tmp_path / "run")
    shutil.copytree(finished["rundir"].root, rundir.root)
    req = infer.RunRequest(**{**finished["req"].__dict__, "run_dir": rundir.root, "mosaic": False})
    return rundir, req, rundir.read_config().grid


def shard_file(rundir: RunDir, sid: ShardId) -> Path:
    return rundir.output / stores.OUTPUT_ARRAY / "c" / str(sid.row) / str(sid.col)


def flip(path: Path, pos: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[pos % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))


def done_in(rundir: RunDir, grid: Grid, sid: ShardId) -> set[ChunkId]:
    with StateStore(rundir.state) as state:
        return {c for c in state.chunk_ids(DONE) if grid.shard_of(c) == sid}


def sinolc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sinolc_dist.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_lost_and_changed_shards_are_recomputed(finished, tmp_path):
    rundir, req, grid = copy_run(finished, tmp_path)
    shards = sorted(present_shards(rundir.output))
    assert len(shards) == 6  # 3×4 chunks one chunk off the shard lattice: 2×3 shards
    # Lose one shard file, and overwrite another shard with other (valid) classes.
    lost, changed = shards[0], shards[-1]
    shard_file(rundir, lost).unlink()
    w = grid.shard_window(changed)
    stores.write_window(stores.open_array(rundir.output, grid), w, np.full((w.height, w.width), 3, np.uint8))
    with StateStore(rundir.state) as state:
        stale = stale_chunks(state, grid, rundir.output, seed=0)
    assert stale and set(stale) == done_in(rundir, grid, lost) | done_in(rundir, grid, changed)
    summary = infer.run(req)
    assert summary.report.done == len(stale)
    assert any("missing, unreadable or different output" in n for n in summary.notes)
    assert np.array_equal(run_output(rundir, finished["scene"].window), finished["reference"])
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] == 12
        assert stale_chunks(state, grid, rundir.output) == []


@pytest.mark.slow
def test_a_flipped_byte_in_one_shard_is_found_by_verify_and_recomputed(finished, tmp_path):
    rundir, req, grid = copy_run(finished, tmp_path)
    sid = max(present_shards(rundir.output), key=lambda s: len(done_in(rundir, grid, s)))
    bad = done_in(rundir, grid, sid)
    path = shard_file(rundir, sid)
    flip(path, -12)  # in the shard index: every read of the shard fails its checksum
    damaged = path.read_bytes()
    # The issue: a resume's sample that misses the shard calls the store up to date.
    with StateStore(rundir.state) as state:
        done = state.chunk_ids(DONE)
        seed = next(s for s in range(100) if random.Random(s).sample(done, 1)[0] not in bad)
        assert stale_chunks(state, grid, rundir.output, sample=1, seed=seed) == []
    proc = sinolc("verify", "--run-dir", str(rundir.root), "--cluster", str(finished["threads"]))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "checked 12 of 12 done chunk(s) in 6 shard(s)" in proc.stdout
    assert f"{len(bad)} chunk(s) in 1 bad shard(s) (1 unreadable) are pending again" in proc.stdout
    assert "run the same `sinolc-dist run" in proc.stdout
    with StateStore(rundir.state) as state:
        assert set(state.chunk_ids(PENDING)) == bad
    assert not path.exists()  # moved aside, byte for byte, so the recomputation starts afresh
    (moved,) = (rundir.root / "output.zarr.quarantine").glob(f"*/classes/c/{sid.row}/{sid.col}")
    assert moved.read_bytes() == damaged
    assert "unreadable" in (rundir.logs / "driver.log").read_text()
    summary = infer.run(req)
    assert summary.report.done == len(bad)
    assert np.array_equal(run_output(rundir, finished["scene"].window), finished["reference"])
    proc = sinolc("verify", "--run-dir", str(rundir.root), "--all", "--cluster", str(finished["threads"]))
    assert proc.returncode == 0, proc.stderr
    assert "no damage found" in proc.stdout


@pytest.mark.slow
def test_a_flipped_byte_in_every_shard_is_recomputed_on_resume(finished, tmp_path):
    rundir, req, grid = copy_run(finished, tmp_path)
    shards = sorted(present_shards(rundir.output))
    for sid in shards[1:]:
        flip(shard_file(rundir, sid), -12)
    first = shard_file(rundir, shards[0])
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # and a truncated file
    # Before: the sample's read raised a RuntimeError and the run could not resume at all.
    verdicts = check_shards(grid, str(rundir.output), [(s, ()) for s in shards])
    assert [v.shard for v in verdicts] == shards and all(v.unreadable for v in verdicts)
    summary = infer.run(req)
    assert summary.report.done == 12 and summary.report.failed == 0
    assert any("unreadable" in n for n in summary.notes)
    assert np.array_equal(run_output(rundir, finished["scene"].window), finished["reference"])
    assert len(list((rundir.root / "output.zarr.quarantine").glob("*/classes/c/*/*"))) == 6


@pytest.mark.slow
def test_damage_in_a_small_sample_widens_to_every_shard(finished, tmp_path):
    rundir, _, grid = copy_run(finished, tmp_path)
    shards = sorted(present_shards(rundir.output))
    for sid in shards:
        flip(shard_file(rundir, sid), -12)
    kind, profile = load_profile(str(finished["threads"]))
    clusters: list[str] = []

    def widen_on():  # the cluster a resume would start, noted when it is started
        clusters.append(kind)
        return open_cluster(kind, profile, rundir.root)

    with StateStore(rundir.state) as state:
        stale = stale_chunks(state, grid, rundir.output, sample=1, seed=0,
                             widen=lambda: on_cluster(widen_on, grid, rundir.output))
        assert sorted(stale) == state.chunk_ids(DONE)  # set pending by the caller
    assert clusters == ["local"]  # the widened check ran on the cluster, once
    assert not present_shards(rundir.output)  # every unreadable file moved aside


@pytest.mark.slow
def test_verify_refuses_while_a_driver_runs(finished, tmp_path):
    rundir, _, _ = copy_run(finished, tmp_path)
    with rundir.driver_lock():
        proc = sinolc("verify", "--run-dir", str(rundir.root), "--sample", "3")
    assert proc.returncode == 2 and proc.stderr.startswith("error: another driver is running")


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shard=st.integers(0, 5), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_byte_ends_in_the_reference_after_verify_and_resume(finished, tmp_path_factory,
                                                                        shard, where, bit):
    rundir, req, _ = copy_run(finished, tmp_path_factory.mktemp("flip"))
    path = shard_file(rundir, sorted(present_shards(rundir.output))[shard])
    flip(path, int(where * path.stat().st_size), bit)
    report = verify_run(rundir.root, cluster=str(finished["threads"]))
    event(f"{len(report.verdicts)} bad shard(s)")
    infer.run(req)
    assert np.array_equal(run_output(rundir, finished["scene"].window), finished["reference"])
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] == 12


@pytest.mark.slow
def test_a_store_the_workers_cannot_open_is_one_line_and_changes_nothing(finished, tmp_path):
    rundir, _, _ = copy_run(finished, tmp_path)
    (rundir.output / "zarr.json").unlink()  # the shards are there, the store's metadata is lost
    with pytest.raises(InputError, match=r"failed on the cluster \(InputError: Zarr store .* does not exist"):
        verify_run(rundir.root, cluster=str(finished["threads"]))
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] == 12
    assert len(present_shards(rundir.output)) == 6


@pytest.mark.slow
def test_an_unreadable_confidence_shard_is_moved_aside_and_recomputed(tmp_path, random_checkpoint):
    from conftest import WORKFLOW

    run = prepared_run(tmp_path, (WORKFLOW % random_checkpoint).replace("device: cpu}", "device: cpu, "
                                                                          "confidence: true}"))
    rundir, req = run["rundir"], infer.RunRequest(**{**run["req"].__dict__, "mosaic": False})
    infer.run(req)
    grid = rundir.read_config().grid
    conf = rundir.output / stores.CONFIDENCE_ARRAY
    window = run["scene"].window
    before = stores.read_window(stores.confidence_array(rundir.output, grid), window)
    sid = max(present_shards(rundir.output), key=lambda s: len(done_in(rundir, grid, s)))
    path = conf / "c" / str(sid.row) / str(sid.col)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated: cannot be decoded
    threads = tmp_path / "threads.yaml"
    threads.write_text(THREADS)
    proc = sinolc("verify", "--run-dir", str(rundir.root), "--cluster", str(threads))
    assert proc.returncode == 1, proc.stderr
    assert "1 bad shard(s) (1 unreadable)" in proc.stdout
    with StateStore(rundir.state) as state:
        assert set(state.chunk_ids(PENDING)) == {c for c in state.chunk_ids() if grid.shard_of(c) == sid}
    assert list((rundir.root / "output.zarr.quarantine").glob(f"*/confidence/c/{sid.row}/{sid.col}"))
    assert shard_file(rundir, sid).exists()  # the readable classes stay where they are
    infer.run(req)
    assert np.array_equal(stores.read_window(stores.confidence_array(rundir.output, grid), window), before)
