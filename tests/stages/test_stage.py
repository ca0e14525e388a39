"""The stage skeleton with real parts: a real LocalCluster, a real state store, a real output Zarr store."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from conftest import small_grid
from distributed import Client

from sinolc_dist.errors import ChunkFailures, RunDirError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, PENDING, ChunkResult, StateStore
from sinolc_dist.stages.dispatch import Dispatcher, RunReport
from sinolc_dist.stages.lifecycle import FAILED as DRIVER_FAILED
from sinolc_dist.stages.lifecycle import FINISHED, read_record
from sinolc_dist.stages.stage import Stage, StageSummary
from sinolc_dist.stages.workflow import load_profile

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
GRID = small_grid()
CHUNKS = sorted(GRID.chunks_in(GRID.full_window))
BROKEN = CHUNKS[7]
PROFILE = "local: {n_workers: 2, threads_per_worker: 1, torch_threads: 1, memory_limit: 1GiB}\n"


@dataclass(frozen=True)
class FillTask:
    """Fill a shard's chunks of the output store with ones (a chunk in ``fail`` refuses at once)."""

    grid: Grid
    chunks: tuple[ChunkId, ...]
    store: str
    fail: tuple[ChunkId, ...] = ()

    @property
    def key(self) -> str:
        return f"fill-{self.chunks[0].key}..{self.chunks[-1].key}"


def fill(task: FillTask) -> list[ChunkResult]:
    """What a worker runs: write each chunk's window, or fail it deterministically."""
    arr = stores.open_array(task.store, task.grid)
    out = []
    for c in task.chunks:
        if c in task.fail:
            out.append(ChunkResult(c, False, error="ValueError: refused", deterministic=True))
            continue
        w = task.grid.chunk_window(c)
        stores.write_window(arr, w, np.ones((w.height, w.width), np.uint8))
        out.append(ChunkResult(c, True, "w", 0.0, 0.0, "ok"))
    return out


class FillStage(Stage[StageSummary]):
    """A stage with every hook filled in, recording the order the skeleton calls them in."""

    name = "fill"

    def __init__(self, run_dir: Path, profile: Path, fail: tuple[ChunkId, ...] = (),
                 broken_prepare: bool = False) -> None:
        super().__init__(run_dir, load_profile(str(profile)))
        self.fail, self.broken_prepare = fail, broken_prepare
        self.calls: list[str] = []

    @property
    def state_path(self) -> Path:
        return self.rundir.root / "fill.sqlite"

    def summary(self) -> StageSummary:
        self.calls.append("summary")
        return StageSummary(self.rundir)

    def freeze(self) -> None:
        self.calls.append("freeze")
        if not self.rundir.output.exists():
            stores.create_store(self.rundir.output, GRID, "output")

    def prepare(self, state: StateStore, summary: StageSummary) -> list[ChunkId]:
        self.calls.append("prepare")
        if self.broken_prepare:
            raise RunDirError("the state disagrees")
        state.add_chunks((c, ("420000",)) for c in CHUNKS)
        summary.planned = len(CHUNKS)
        return state.chunk_ids(PENDING)

    def tasks(self, todo: list[ChunkId]) -> Iterator[FillTask]:
        for group in GRID.by_shard(todo).values():
            yield FillTask(GRID, tuple(group), str(self.rundir.output), self.fail)

    def dispatcher(self, client: Client, state: StateStore,
                   on_progress: Callable[[RunReport], None]) -> Dispatcher[FillTask]:
        return Dispatcher(client, state, retries=1, max_in_flight=2, work=fill, on_progress=on_progress)

    def on_cluster(self, client: Client) -> None:
        self.calls.append(f"on_cluster {len(client.scheduler_info()['workers'])} workers")

    def deliver(self, summary: StageSummary, client: Client | None) -> None:
        self.calls.append(f"deliver on {'the cluster' if client is not None else 'no cluster'}")

    def close(self, state: StateStore, summary: StageSummary) -> None:
        self.calls.append(f"close {state.count()[DONE]} done")

    def unfinished(self, summary: StageSummary) -> str:
        return f"{summary.report.failed} chunk(s) failed" if summary.report.failed else ""


class FillThenReport(FillStage):
    """The same stage whose failed chunks do not fail the driver (as ingest's)."""

    failures_end_driver = False


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(PROFILE)
    return path


def _output(rundir: RunDir) -> np.ndarray:
    return stores.read_window(stores.open_array(rundir.output, GRID), GRID.full_window)


@pytest.mark.slow
def test_the_skeleton_runs_every_hook_in_order_on_a_real_cluster(tmp_path, profile):
    stage = FillStage(tmp_path / "run", profile)
    started: list[StageSummary] = []
    progress: list[tuple[int, int]] = []
    summary = stage.run(on_start=started.append, on_progress=lambda r, n: progress.append((r.done, n)))
    assert stage.calls == ["summary", "freeze", "prepare", "on_cluster 2 workers", "deliver on the cluster",
                           f"close {len(CHUNKS)} done"]
    assert started == [summary] and summary.dashboard and summary.scheduler.startswith("tcp://")
    assert summary.report.done == len(CHUNKS) and summary.planned == len(CHUNKS)
    assert progress[-1] == (len(CHUNKS), len(CHUNKS))  # the last flush reports every chunk
    assert (_output(stage.rundir) == 1).all()
    record = read_record(stage.rundir)
    assert record is not None and (record.stage, record.end) == ("fill", FINISHED)
    with StateStore(stage.state_path) as state:
        assert state.count()[DONE] == len(CHUNKS)


def test_nothing_to_do_opens_no_cluster(tmp_path, profile):
    rundir = RunDir(tmp_path / "run").create()
    with StateStore(rundir.root / "fill.sqlite") as state:
        state.add_chunks((c, ("420000",)) for c in CHUNKS)
        state.record([ChunkResult(c, True, "w", 0.0, 0.0, "ok") for c in CHUNKS])
    stage = FillStage(rundir.root, profile)
    started: list[StageSummary] = []
    summary = stage.run(on_start=started.append)
    assert stage.calls == ["summary", "freeze", "prepare", "deliver on no cluster",
                           f"close {len(CHUNKS)} done"]
    assert started == [summary] and summary.dashboard == "" and summary.report.done == 0
    assert (_output(rundir) == 0).all()  # no task ran
    assert read_record(rundir).end == FINISHED


def test_an_error_in_a_hook_is_the_drivers_end_and_frees_the_lock(tmp_path, profile):
    stage = FillStage(tmp_path / "run", profile, broken_prepare=True)
    with pytest.raises(RunDirError, match="the state disagrees"):
        stage.run()
    record = read_record(stage.rundir)
    assert record is not None and record.end == DRIVER_FAILED and record.error == "the state disagrees"
    assert "fill stopped: the state disagrees" in (stage.rundir.logs / "driver.log").read_text()
    with stage.rundir.driver_lock():  # released on the way out
        pass


@pytest.mark.slow
@pytest.mark.parametrize(("cls", "driver_end"), [(FillStage, DRIVER_FAILED), (FillThenReport, FINISHED)],
                         ids=["failures-end-the-driver", "failures-after-the-driver"])
def test_failed_chunks_raise_inside_or_after_the_driver_session(tmp_path, profile, cls, driver_end):
    stage = cls(tmp_path / "run", profile, fail=(BROKEN,))
    with pytest.raises(ChunkFailures, match=r"^1 chunk\(s\) failed$") as err:
        stage.run()
    summary = err.value.summary
    assert isinstance(summary, StageSummary) and summary.report.done == len(CHUNKS) - 1
    assert summary.report.retried == 0 and summary.report.errors == {BROKEN.key: "ValueError: refused"}
    assert stage.calls[-1] == f"close {len(CHUNKS) - 1} done"  # the summary is complete before the error
    record = read_record(stage.rundir)
    assert record is not None and record.end == driver_end
    assert record.error == ("1 chunk(s) failed" if driver_end == DRIVER_FAILED else None)
    with StateStore(stage.state_path) as state:
        assert state.chunk_ids(FAILED) == [BROKEN]
    window = GRID.chunk_window(BROKEN)
    out = _output(stage.rundir)
    full = GRID.full_window
    assert (out[window.slices()] == 0).all()
    assert out.sum() == full.height * full.width - window.height * window.width


def test_a_stage_must_fill_in_every_hook(tmp_path):
    with pytest.raises(TypeError, match="abstract"):
        Stage(tmp_path / "run", ("local", {}))  # type: ignore[abstract]
    assert not (tmp_path / "run").exists()
