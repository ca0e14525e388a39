"""Cluster profiles are checked whole as they are loaded (every key, its type); what they ask of tasks."""

from __future__ import annotations

import pytest

from sinolc_dist.cluster.profiles import check_profile, task_resources, torch_threads
from sinolc_dist.errors import ConfigError
from sinolc_dist.stages.workflow import load_profile


def test_batch_profile_strings_and_mappings_are_typed():
    base = {"cores": 1, "memory": "2GB"}
    with pytest.raises(ConfigError, match=r"'queue' must be a string \(quote it in the YAML\) \(got 5\)"):
        check_profile("slurm", {**base, "queue": 5})
    with pytest.raises(ConfigError, match="'scheduler_options' must be a mapping"):
        check_profile("pbs", {**base, "scheduler_options": ["a"]})


@pytest.mark.parametrize(("text", "needle"), [
    ("local:\n  n_workers: two\n", "p.yaml: cluster profile key 'n_workers' must be an integer >= 1"),
    ("slurm:\n  cores: 1\n  memory: 2GB\n  walltime: 24:00:00\n", "p.yaml: cluster profile key 'walltime'"),
    ("local: [1, 2]\n", "p.yaml: local: expected a mapping of KEY: VALUE, got [1, 2]"),
    ("lsf:\n  cores: 1\n", "p.yaml: unknown cluster kind 'lsf'"),
])
def test_load_profile_checks_before_returning(tmp_path, text, needle):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert needle in str(err.value)


@pytest.mark.parametrize("name", ["local", "slurm", "pbs", "sge", "slurm-runner"])
def test_shipped_profiles_pass(name):
    assert load_profile(name)[0] == name


def test_unquoted_yaml_walltime_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("slurm:\n  cores: 1\n  memory: 2GB\n  walltime: 24:00:00\n")
    with pytest.raises(ConfigError, match="quoted"):  # YAML 1.1 reads 86400: SLURM would take minutes
        load_profile(str(path))


@pytest.mark.parametrize("name", ["slurm", "pbs", "sge", "slurm-runner"])
def test_shipped_profiles_are_valid(name):
    kind, settings = load_profile(name)
    assert kind == name
    check_profile(kind, settings)


def test_tasks_ask_for_a_gpu_only_where_workers_declare_one():
    assert task_resources({"worker_extra_args": ["--resources", "GPU=1"]}) == {"GPU": 1}
    assert task_resources({"worker_extra_args": ["--lifetime", "1h"]}) is None
    assert task_resources({}) is None


def test_torch_threads_default_to_torchs_own():
    assert torch_threads({"torch_threads": 2}) == 2 and torch_threads({}) == 0


def test_check_profile_asks_the_kinds_scheduler():
    check_profile("local", {"n_workers": 1})
    with pytest.raises(ConfigError, match="in the local cluster profile"):
        check_profile("local", {"cores": 1})  # a batch key
    with pytest.raises(ConfigError, match="unknown cluster kind 'lsf'"):
        check_profile("lsf", {})
