"""The driver against a real LocalCluster: retries, failures, a worker dying mid-chunk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import pytest
from distributed import Client, LocalCluster

from sinolc_dist.engine.inference import ModelRef, ShardTask, shard_tasks
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.rundir.state import DONE, FAILED, ChunkResult, StateStore
from sinolc_dist.stages.dispatch import Dispatcher, dispatch

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
GRID = Grid(chunk=512, block=256, shard=2)
CHUNKS = [ChunkId(r, c) for r in range(100, 104) for c in range(200, 204)]


def _attempt(marker_dir: str, cid: ChunkId) -> int:
    """Count this chunk's attempts in files (shared by all worker processes)."""
    path = Path(marker_dir) / cid.key.replace("/", "_")
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def flaky(task: ShardTask) -> list[ChunkResult]:
    """Chunk c/101/201 raises on its first two attempts; the others succeed."""
    out = []
    for c in task.chunks:
        if c == ChunkId(101, 201) and _attempt(task.input_path, c) <= 2:
            out.append(ChunkResult(c, False, error="OSError: flaky read"))
        else:
            out.append(ChunkResult(c, True, "w", 0.0, 0.0, "ok"))
    return out


def dies(task: ShardTask) -> list[ChunkResult]:
    """The worker holding chunk c/102/202 dies on the first attempt (os._exit)."""
    if ChunkId(102, 202) in task.chunks and _attempt(task.input_path, ChunkId(102, 202)) == 1:
        os._exit(1)
    return [ChunkResult(c, True, "w", 0.0, 0.0, "ok") for c in task.chunks]


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cl, \
            Client(cl) as c:
        yield c


def _state(tmp_path) -> StateStore:
    state = StateStore(tmp_path / "state.sqlite")
    state.add_chunks((c, ("420000",)) for c in CHUNKS)
    return state


def test_tasks_are_whole_shards_named_by_their_chunks():
    tasks = list(shard_tasks(GRID, CHUNKS, "in", "out", ModelRef("x")))
    assert len(tasks) == 4
    assert tasks[0].key == "infer-c/100/200..c/101/201"
    assert all(set(t.chunks) == set(GRID.chunks_in(GRID.shard_window(t.shard))) for t in tasks)


@pytest.mark.slow
def test_retry_then_success(client, tmp_path):
    with _state(tmp_path) as state:
        tasks = shard_tasks(GRID, CHUNKS, str(tmp_path), "out", ModelRef("x"))
        report = dispatch(client, state, tasks, retries=2, max_in_flight=2, work=flaky)
        assert (report.done, report.failed, report.retried) == (16, 0, 2)
        recs = {r.chunk: r for r in state.records()}
        assert recs[ChunkId(101, 201)].attempts == 3
        assert state.count()[DONE] == 16


@pytest.mark.slow
def test_retries_exhausted_marks_failed_and_goes_on(client, tmp_path):
    with _state(tmp_path) as state:
        tasks = shard_tasks(GRID, CHUNKS, str(tmp_path), "out", ModelRef("x"))
        report = dispatch(client, state, tasks, retries=1, max_in_flight=2, work=flaky)
        assert (report.done, report.failed) == (15, 1)
        assert report.errors == {"c/101/201": "OSError: flaky read"}
        assert state.chunk_ids(FAILED) == [ChunkId(101, 201)]
        (rec,) = [r for r in state.records() if r.status == FAILED]
        assert rec.error == "OSError: flaky read"


@pytest.mark.slow
def test_worker_dying_mid_chunk_costs_only_that_task(client, tmp_path):
    with _state(tmp_path) as state:
        tasks = shard_tasks(GRID, CHUNKS, str(tmp_path), "out", ModelRef("x"))
        report = dispatch(client, state, tasks, retries=2, max_in_flight=2, work=dies)
        assert report.done == 16
        assert report.failed == 0
        assert state.count()[DONE] == 16


@pytest.mark.slow
def test_on_record_sees_each_final_result_once_after_it_is_in_the_state(client, tmp_path):
    seen: list[ChunkResult] = []
    with _state(tmp_path) as state:

        def recorded(results: list[ChunkResult]) -> None:
            in_state = {r.chunk: r.status for r in state.records()}
            assert all(in_state[r.chunk] == (DONE if r.ok else FAILED) for r in results)
            seen.extend(results)

        tasks = shard_tasks(GRID, CHUNKS, str(tmp_path), "out", ModelRef("x"))
        Dispatcher(client, state, retries=1, max_in_flight=2, work=flaky, on_record=recorded).run(tasks)
    assert sorted(r.chunk for r in seen) == CHUNKS  # the retried chunk's first failure is not final
    assert [r.ok for r in seen if r.chunk == ChunkId(101, 201)] == [False]


class _Watcher:
    """Records what a dispatch tells its watchers, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def submitted(self, chunks: tuple[ChunkId, ...], key: str) -> None:
        self.events.append(("submitted", chunks, key))

    def retrying(self, result: ChunkResult) -> None:
        self.events.append(("retrying", result.chunk))

    def recorded(self, results: list[ChunkResult]) -> None:
        self.events.append(("recorded", tuple(r.chunk for r in results)))

    def progress(self, report) -> None:
        self.events.append(("progress", report.done))


@pytest.mark.slow
def test_watchers_see_submissions_retries_and_records(client, tmp_path):
    watcher = _Watcher()
    with _state(tmp_path) as state:
        tasks = shard_tasks(GRID, CHUNKS, str(tmp_path), "out", ModelRef("x"))
        dispatcher = Dispatcher(client, state, retries=2, max_in_flight=2, work=flaky)
        dispatcher.watchers.append(watcher)
        dispatcher.run(tasks)
    kinds = [e[0] for e in watcher.events]
    keys = [e[2] for e in watcher.events if e[0] == "submitted"]
    assert len(keys) == 4 + 2  # four shards, then the flaky chunk twice more (retries go first)
    assert [k for k in keys if k.startswith("infer-c/101/201-")] == [f"infer-c/101/201-a{n}" for n in (2, 3)]
    assert [e[1] for e in watcher.events if e[0] == "retrying"] == [ChunkId(101, 201)] * 2
    assert sorted(c for e in watcher.events if e[0] == "recorded" for c in e[1]) == CHUNKS
    assert kinds[-1] == "progress" and watcher.events[-1][1] == 16
