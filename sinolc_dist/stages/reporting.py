"""What a long command shows while it runs and when it ends.

A progress bar on a terminal (chunks, px/s, km²/h, ETA), a plain line every
minute in batch logs (``logs/driver-<job id>.out``: done, failed, pending,
retried, px/s, ETA), and the closing summary (each stage writes its own lines:
``infer.summary_lines``, ``ingest.summary_lines``), also printed when the
stage ends with failed chunks (then the error line follows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sinolc_dist.errors import ChunkFailures
from sinolc_dist.stages.dispatch import RunReport
from sinolc_dist.stages.stage import StageSummary

#: Progress and summaries go to stderr; results a script may read go to stdout.
console = Console(stderr=True)
S = TypeVar("S", bound=StageSummary)


#: Seconds between the progress lines of a driver that is not on a terminal (a batch job's log).
BATCH_EVERY_S = 60


class ProgressDisplay:
    """A progress bar on a terminal; in batch logs a line every :data:`BATCH_EVERY_S` s and at the end."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.task: Any = None
        self.last = 0.0

    def start(self, summary: StageSummary) -> None:
        """Print where the run is and what is already done, the dashboard's and scheduler's addresses."""
        console.print(f"run directory: {summary.rundir.root.resolve()}")
        console.print(f"chunks planned: {summary.planned}, already done: {summary.skipped}")
        if summary.dashboard:
            console.print(f"dashboard: {summary.dashboard}")
        if summary.live_map:
            console.print(f"live chunk map: {summary.live_map}")
        if summary.scheduler:
            console.print(f"scheduler: {summary.scheduler}")

    def update(self, report: RunReport, total: int) -> None:
        """Show chunks done/failed, throughput and the ETA."""
        eta = ""
        finished = report.done + report.failed
        if finished and report.seconds:
            remaining = (total - finished) * report.seconds / finished
            eta = time.strftime("%H:%M:%S", time.gmtime(remaining))
        km2_h = report.pixels * 1e-6 / report.seconds * 3600 if report.seconds else 0.0
        text = (f"{report.done} done, {report.failed} failed, {report.retried} retried | "
                f"{report.px_per_s:,.0f} px/s, {km2_h:,.1f} km²/h | ETA {eta or '?'}")
        if console.is_terminal:
            if self.bar is None:
                self.bar = Progress(TextColumn("chunks"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total}"),
                                    TimeElapsedColumn(), TextColumn("{task.description}"),
                                    console=console)
                self.bar.start()
                self.task = self.bar.add_task(text, total=total)
            self.bar.update(self.task, completed=finished, description=text)
        elif time.time() - self.last > BATCH_EVERY_S or finished == total:
            self.last = time.time()
            console.print(f"[{finished}/{total}] {report.done} done, {report.failed} failed, "
                          f"{total - finished} pending, {report.retried} retried | {text.split(' | ', 1)[1]}")

    def stop(self) -> None:
        """Remove the bar (idempotent)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def run_with_progress(describe: Callable[[S], list[str]], fn: Callable[..., S], *args: Any,
                      **kwargs: Any) -> S:
    """Call a stage with a progress display; print its summary, also when chunks failed."""
    progress = ProgressDisplay()
    try:
        summary = fn(*args, on_start=progress.start, on_progress=progress.update, **kwargs)
    except ChunkFailures as exc:  # the stage went on: show what it did, then the error
        progress.stop()
        if exc.summary is not None:
            _print(describe(exc.summary))
        raise
    finally:
        progress.stop()
    _print(describe(summary))
    return summary


def _print(lines: list[str]) -> None:
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
