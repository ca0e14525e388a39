"""``sinolc-dist verify``: check every done chunk's output shard (or a sample's) on the run's cluster.

The scan itself, shared with every resume, is :mod:`sinolc_dist.rundir.integrity`;
this module runs it on a cluster (:func:`cluster_runner`: one task per batch of
shards), holds the driver lock while it does, sets bad chunks pending batch by
batch and says what to do next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from distributed import Client, as_completed

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.integrity import (
    MISSING,
    Check,
    Runner,
    ShardJob,
    ShardVerdict,
    VerifyReport,
    check_done,
    check_shards,
)
from sinolc_dist.rundir.layout import RunDir, setup_logging
from sinolc_dist.rundir.state import StateStore
from sinolc_dist.stages.workflow import load_profile

log = logging.getLogger("sinolc_dist")


def cluster_runner(client: Client, grid: Grid, store_path: Path, check: Check = check_shards) -> Runner:
    """Check batches on a cluster, one task per batch, yielding each as its task finishes.

    A task that fails (a worker lost for good, a store the workers cannot open)
    stops the verification with one line; what was found before is kept.
    """
    def run(batches: list[list[ShardJob]]) -> Iterator[tuple[list[ShardJob], list[ShardVerdict]]]:
        stamp = time.monotonic_ns()
        futures = {client.submit(check, grid, str(store_path), b,
                                 key=f"verify-{b[0][0].key}..{b[-1][0].key}-{stamp}"): b for b in batches}
        for fut in as_completed(list(futures)):
            batch = futures.pop(fut)
            try:
                verdicts = fut.result()
            except Exception as exc:  # a traceback here would only hide what to do
                for rest in futures:
                    rest.cancel()
                raise InputError(
                    f"checking shards {batch[0][0].key}..{batch[-1][0].key} of {store_path} failed on "
                    f"the cluster ({type(exc).__name__}: {exc}); run the same command again "
                    "(the bad shards found so far are kept as found)"
                ) from None
            yield batch, verdicts
    return run


@contextmanager
def on_cluster(open_client: Callable[[], AbstractContextManager[Client]], grid: Grid,
                store_path: Path) -> Iterator[Runner]:
    """A runner on the cluster that ``open_client`` starts (and closes after): a resume's ``widen``."""
    with open_client() as client:
        yield cluster_runner(client, grid, store_path)


def verify_run(run_dir: Path, sample: int | None = None, cluster: str | None = None,
               seed: int | None = None) -> VerifyReport:
    """``sinolc-dist verify``: check every done chunk's shard (or a sample's) on the run's cluster.

    Holds the driver lock, so it never races a running driver.  Bad chunks are
    set pending batch by batch and logged to ``logs/driver.log``; the next
    ``sinolc-dist run`` recomputes them.  ``cluster`` overrides the run's profile.
    """
    rundir = RunDir(Path(run_dir)).require()
    config = rundir.read_config()
    grid = config.grid
    kind, settings = load_profile(cluster or config.cluster)
    setup_logging(rundir)
    with rundir.driver_lock(), StateStore(rundir.state) as state:
        def settle(verdicts: list[ShardVerdict]) -> None:
            state.reset([c for v in verdicts for c in v.chunks])
            for v in verdicts:
                log.warning("verify: shard %s/%s %s: %d done chunk(s) set pending (%s)", stores.OUTPUT_ARRAY,
                            v.shard.key, v.reason, len(v.chunks), ChunkId.span(v.chunks))

        report = check_done(state, grid, rundir.output,
                            lambda: on_cluster(lambda: open_cluster(kind, settings, rundir.root),
                                                grid, rundir.output),
                            sample, seed, settle)
    log.info("verify %s: %d of %d done chunk(s) checked in %d shard(s)%s, %d bad", rundir.root,
             report.checked_chunks, report.done, report.checked_shards,
             " (the sample found damage: all checked)" if report.widened else "", len(report.bad))
    return report


def summary_lines(report: VerifyReport, run_dir: Path) -> list[str]:
    """What ``sinolc-dist verify`` prints: what was checked, what was bad, what to do next."""
    scope = " (the sample found damage, so every shard was checked)" if report.widened else ""
    lines = [f"checked {report.checked_chunks:,} of {report.done:,} done chunk(s) in "
             f"{report.checked_shards:,} shard(s){scope}"]
    if not report.verdicts:
        return [*lines, "no damage found: nothing to recompute"]
    kinds = {"missing": sum(v.reason == MISSING for v in report.verdicts),
             "unreadable": sum(bool(v.unreadable) for v in report.verdicts)}
    kinds["with different classes"] = len(report.verdicts) - sum(kinds.values())
    lines.append(f"{len(report.bad):,} chunk(s) in {len(report.verdicts):,} bad shard(s) ("
                 + ", ".join(f"{n:,} {k}" for k, n in kinds.items() if n) + ") are pending again")
    if report.quarantined:
        lines.append(f"unreadable shard files were moved aside, e.g. {report.quarantined[0]}")
    lines.append(f"to recompute them, run the same `sinolc-dist run --run-dir {run_dir} …` command again "
                 f"(or `sinolc-dist rerun --run-dir {run_dir} --chunk ID`); details in logs/driver.log")
    return lines
