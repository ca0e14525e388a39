"""The shared core: the registry, the batch schedulers' common profile checks, lifetimes and hints."""

from __future__ import annotations

import pytest

from sinolc_dist.cluster.local import Local
from sinolc_dist.cluster.pbs import Pbs
from sinolc_dist.cluster.registry import SCHEDULERS, scheduler
from sinolc_dist.cluster.scheduler import BatchScheduler, Scheduler, lifetime_args, worker_dashboard
from sinolc_dist.cluster.sge import Sge
from sinolc_dist.cluster.slurm import Slurm
from sinolc_dist.cluster.slurm_runner import SlurmRunner
from sinolc_dist.errors import ConfigError
from tests.cluster.examples import COMMON, PROFILES


def test_registry_knows_each_scheduler_by_its_kind():
    assert {k: type(s) for k, s in SCHEDULERS.items()} == {"local": Local, "slurm": Slurm, "pbs": Pbs,
                                                           "sge": Sge, "slurm-runner": SlurmRunner}
    assert all(scheduler(k).kind == k for k in SCHEDULERS)
    assert [k for k in SCHEDULERS if scheduler(k).batch] == ["slurm", "pbs", "sge", "slurm-runner"]
    assert all(isinstance(scheduler(k), BatchScheduler) == scheduler(k).batch for k in SCHEDULERS)


def test_unknown_kind_is_refused():
    with pytest.raises(ConfigError, match="unknown cluster kind 'lsf'; known: local, pbs, sge, slurm, "
                                          "slurm-runner"):
        scheduler("lsf")


def test_the_core_cannot_be_instantiated():
    with pytest.raises(TypeError):
        Scheduler()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        BatchScheduler()  # type: ignore[abstract]


@pytest.mark.parametrize("kind", ["slurm", "pbs", "sge"])
def test_job_ids_and_commands_come_from_dask_jobqueue(kind):
    sched = scheduler(kind)
    assert sched.job_class is sched.cluster_class.job_cls
    assert sched.job_class.submit_command in ("sbatch", "qsub")
    assert sched.job_id_variable.startswith("$") and "{id}" in sched.where_command


def test_lifetime_margin_bounds():
    assert lifetime_args(600) == ["--lifetime", "300s", "--lifetime-stagger", "100s"]
    assert lifetime_args(48 * 3600) == ["--lifetime", f"{48 * 3600 - 1800}s", "--lifetime-stagger", "600s"]


def test_worker_dashboard_on_loopback_unless_the_profile_says():
    assert worker_dashboard(["--resources", "GPU=1"]) == ["--dashboard-address", "127.0.0.1:0"]
    assert worker_dashboard(["--dashboard-address=:8788"]) == []


@pytest.mark.parametrize("value", [86400, "0:00", "1-", "two"])
def test_walltime_that_is_not_a_positive_string_duration_is_refused(value):
    with pytest.raises(ConfigError, match="cluster profile key 'walltime'"):
        scheduler("slurm").walltime_seconds(value)


@pytest.mark.parametrize(("kind", "message", "hint"), [
    ("pbs", "qsub: Unknown queue", "change the pbs profile's 'queue' (now queue: 'gpu')"),
    ("sge", "job exceeds the time limit", "change the sge profile's 'walltime' (now walltime: '02:00:00')"),
    ("slurm", "error: can't open /x/out", "change the slurm profile's 'log_directory' (it must "
                                                   "exist on the compute nodes)"),
    ("pbs", "something else", "check the pbs profile's queue, account, memory, walltime, resource_spec "
                              "and job_extra_directives"),
])
def test_hints_point_a_scheduler_message_at_a_key(kind, message, hint):
    assert scheduler(kind).hint(message, {**PROFILES[kind], **COMMON}) == hint


@pytest.mark.parametrize(("kind", "override", "needles"), [
    ("slurm", {"gpus": 1}, ["unknown key(s) ['gpus']", "valid keys:", "job_extra_directives"]),
    ("pbs", {"env_extra": ["x"]}, ["'env_extra' is now 'job_script_prologue'"]),
    ("slurm", {"memory": "-4GB"}, ["'memory'", "positive"]),
    ("pbs", {"memory": "lots"}, ["'memory'"]),
    ("sge", {"cores": 0}, ["'cores'", ">= 1"]),
    ("slurm", {"processes": 4}, ["'processes'", "cannot exceed cores"]),
    ("slurm", {"minimum_jobs": 3, "maximum_jobs": 2}, ["'maximum_jobs'", "minimum_jobs (3)"]),
    ("slurm", {"walltime": "two hours"}, ["'walltime'", "[D-]HH:MM:SS"]),
    ("pbs", {"walltime": "1-00:00:00"}, ["'walltime'"]),
    ("slurm", {"job_script_prologue": "module load cuda"}, ["'job_script_prologue'", "list of strings"]),
    ("sge", {"tls": "yes"}, ["'tls'"]),
    ("slurm", {"watch_interval": 0}, ["'watch_interval'", "seconds > 0"]),
    ("pbs", {"watch_interval": "often"}, ["'watch_interval'"]),
    ("sge", {"give_up_after": 0}, ["'give_up_after'", ">= 1"]),
])
def test_bad_profiles_name_the_key(kind, override, needles):
    with pytest.raises(ConfigError) as err:
        scheduler(kind).check( {**PROFILES[kind], **COMMON, **override})
    for needle in needles:
        assert needle in str(err.value)


