"""The one place a profile's kind is looked up: every scheduler by its name, an unknown kind refused."""

from __future__ import annotations

import pytest

from sinolc_dist.cluster.registry import SCHEDULERS, scheduler
from sinolc_dist.errors import ConfigError


def test_each_kind_names_its_scheduler():
    assert set(SCHEDULERS) == {"local", "slurm", "pbs", "sge", "slurm-runner"}
    for kind in SCHEDULERS:
        assert scheduler(kind).kind == kind
    assert not scheduler("local").batch and all(scheduler(k).batch for k in ("slurm", "pbs", "sge"))


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(ConfigError,
                       match=r"^unknown cluster kind 'lsf'; known: local, pbs, sge, slurm, slurm-runner$"):
        scheduler("lsf")
