"""What a long command shows: the start lines, progress lines in batch logs, and the closing summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinolc_dist.errors import ChunkFailures
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages.dispatch import RunReport
from sinolc_dist.stages.reporting import ProgressDisplay, console, run_with_progress
from sinolc_dist.stages.stage import StageSummary


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Lines as printed, not wrapped at the 80 columns a console without a terminal assumes."""
    monkeypatch.setattr(console, "width", 400)


def _summary(tmp_path: Path) -> StageSummary:
    return StageSummary(RunDir(tmp_path / "run"), "http://127.0.0.1:8787/status", "tcp://127.0.0.1:8786",
                        planned=12, skipped=4, report=RunReport(done=6, failed=2, retried=1, seconds=4.0,
                                                                pixels=400_000))


def test_start_names_the_run_directory_counts_and_addresses(tmp_path, capsys):
    ProgressDisplay().start(_summary(tmp_path))
    err = capsys.readouterr().err.splitlines()
    assert err == [f"run directory: {(tmp_path / 'run').resolve()}", "chunks planned: 12, already done: 4",
                   "dashboard: http://127.0.0.1:8787/status", "scheduler: tcp://127.0.0.1:8786"]


def test_start_leaves_out_addresses_when_no_cluster_ran(tmp_path, capsys):
    ProgressDisplay().start(StageSummary(RunDir(tmp_path / "run")))
    err = capsys.readouterr().err
    assert "chunks planned: 0, already done: 0" in err and "dashboard" not in err and "scheduler" not in err


def test_batch_progress_is_a_line_a_minute_and_at_the_end(capsys):
    progress = ProgressDisplay()
    progress.update(RunReport(done=1, seconds=2.0, pixels=100_000), 4)
    progress.update(RunReport(done=2, seconds=4.0, pixels=200_000), 4)  # within a minute of the first: quiet
    progress.update(RunReport(done=3, failed=1, retried=2, seconds=8.0, pixels=300_000), 4)  # the end
    lines = capsys.readouterr().err.splitlines()
    # 1 of 4 done in 2 s: 6 s left; 100,000 px in 2 s = 50,000 px/s = 0.1 km² in 2 s = 180 km²/h.
    assert lines == ["[1/4] 1 done, 0 failed, 3 pending, 0 retried | 50,000 px/s, 180.0 km²/h | ETA 00:00:06",
                     "[4/4] 3 done, 1 failed, 0 pending, 2 retried | 37,500 px/s, 135.0 km²/h | ETA 00:00:00"]
    progress.stop()
    progress.stop()  # idempotent


def test_progress_before_any_time_has_passed_has_no_eta(capsys):
    ProgressDisplay().update(RunReport(), 3)
    assert capsys.readouterr().err.strip() == \
        "[0/3] 0 done, 0 failed, 3 pending, 0 retried | 0 px/s, 0.0 km²/h | ETA ?"


def test_run_with_progress_passes_the_callbacks_and_prints_the_summary(tmp_path, capsys):
    seen: dict[str, object] = {}

    def stage(arg: str, on_start, on_progress, flag: bool) -> StageSummary:
        seen.update(arg=arg, flag=flag, start=on_start, progress=on_progress)
        return _summary(tmp_path)

    summary = run_with_progress(lambda s: [f"done: {s.report.done}"], stage, "x", flag=True)
    assert summary.report.done == 6 and (seen["arg"], seen["flag"]) == ("x", True)
    assert callable(seen["start"]) and callable(seen["progress"])
    assert capsys.readouterr().err.splitlines() == ["done: 6"]


def test_run_with_progress_prints_what_a_failed_stage_did_before_the_error(tmp_path, capsys):
    def stage(on_start, on_progress) -> StageSummary:
        raise ChunkFailures("chunk(s) not classified: 2 failed now", _summary(tmp_path))

    with pytest.raises(ChunkFailures, match="2 failed now"):
        run_with_progress(lambda s: [f"failed: {s.report.failed}"], stage)
    assert capsys.readouterr().err.splitlines() == ["failed: 2"]


def test_a_failure_without_a_summary_prints_nothing(capsys):
    def stage(on_start, on_progress) -> StageSummary:
        raise ChunkFailures("nothing ran")

    with pytest.raises(ChunkFailures):
        run_with_progress(lambda s: ["never"], stage)
    assert capsys.readouterr().err == ""
