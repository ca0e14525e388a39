"""The local cluster: its profile's keys and types, and every socket of it on loopback."""

from __future__ import annotations

import os

import pytest

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.errors import ConfigError
from tests.cluster.scenarios import listening, workers_listening


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
        scheduler("local").check(settings)
    for needle in needles:
        assert needle in str(err.value)


def test_local_profile_that_fits_passes():
    local = scheduler("local")
    local.check({"n_workers": 2, "threads_per_worker": 1, "processes": True, "memory_limit": "4GB",
                 "torch_threads": 1, "host": "127.0.0.1"})
    assert "n_workers" in local.valid_keys() and "loop" not in local.valid_keys()
    local.require_commands()  # nothing to find: nothing is submitted


@pytest.mark.slow
def test_every_listening_socket_of_a_local_cluster_is_on_loopback(tmp_path):
    with open_cluster("local", {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB"},
                      tmp_path) as client:
        per_worker = workers_listening(client)
        driver = listening([os.getpid()])
    assert len(per_worker) == 2 and driver
    for socks, dashboard in per_worker.values():
        assert dashboard in {port for _, port in socks}  # the worker's dashboard was among them
    assert {ip for socks, _ in per_worker.values() for ip, _ in socks} | {ip for ip, _ in driver} \
        == {"127.0.0.1"}


