"""The schedulers by name: the one place a profile's kind (``local``, ``slurm``…) is looked up.

A new scheduler is a module with a :class:`~sinolc_dist.cluster.scheduler.BatchScheduler`
subclass and one entry here.
"""

from __future__ import annotations

from sinolc_dist.cluster.local import LOCAL
from sinolc_dist.cluster.pbs import PBS
from sinolc_dist.cluster.scheduler import Scheduler
from sinolc_dist.cluster.sge import SGE
from sinolc_dist.cluster.slurm import SLURM
from sinolc_dist.cluster.slurm_runner import SLURM_RUNNER
from sinolc_dist.errors import ConfigError

SCHEDULERS: dict[str, Scheduler] = {s.kind: s for s in (LOCAL, SLURM, PBS, SGE, SLURM_RUNNER)}


def scheduler(kind: str) -> Scheduler:
    """The scheduler of a profile's kind; an unknown kind is a :class:`ConfigError` listing the known."""
    try:
        return SCHEDULERS[kind]
    except KeyError:
        batch = sorted(k for k, s in SCHEDULERS.items() if s.batch)
        local = [k for k, s in SCHEDULERS.items() if not s.batch]
        raise ConfigError(f"unknown cluster kind {kind!r}; known: {', '.join([*local, *batch])}") from None
