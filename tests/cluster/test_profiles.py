"""Cluster profiles are checked whole as they are loaded: every key and its type, local and batch."""

from __future__ import annotations

import pytest

from sinolc_dist.cluster.profiles import check_profile, local_keys
from sinolc_dist.errors import ConfigError
from sinolc_dist.stages.workflow import load_profile


@pytest.mark.parametrize(("settings", "needles"), [
    ({"n_workers": "two"}, ["'n_workers' must be an integer >= 1", "(got 'two')"]),
    ({"threads_per_worker": 1.5}, ["'threads_per_worker' must be an integer >= 1"]),
    ({"processes": "yes"}, ["'processes' must be true"]),
    ({"memory_limit": "lots"}, ["'memory_limit' must be 'auto' or a positive size"]),
    ({"dashboard_address": 8787}, ["'dashboard_address' must be a string"]),
    ({"n_wrokers": 2}, ["unknown key(s) ['n_wrokers'] in the local cluster profile", "valid keys:",
                        "n_workers", "torch_threads"]),
])
def test_local_profile_keys_and_types_are_checked(settings, needles):
    with pytest.raises(ConfigError) as err:
        check_profile("local", settings)
    for needle in needles:
        assert needle in str(err.value)


def test_local_profile_that_fits_passes():
    check_profile("local", {"n_workers": 2, "threads_per_worker": 1, "processes": True, "memory_limit": "4GB",
                            "torch_threads": 1, "host": "127.0.0.1"})
    assert "n_workers" in local_keys() and "loop" not in local_keys()


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


@pytest.mark.parametrize("name", ["local", "slurm", "pbs", "sge"])
def test_shipped_profiles_pass(name):
    assert load_profile(name)[0] == name
