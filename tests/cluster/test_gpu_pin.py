"""The preload that pins each worker of a multi-GPU job to its own device."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from sinolc_dist.cluster.gpu_pin import VISIBLE, dask_setup, device_for, rank_of


@pytest.mark.parametrize(("name", "rank"), [("SLURMCluster-3-0", 0), ("SLURMCluster-3-1", 1),
                                            ("sinolc-worker-12-7", 7), ("lonely", 0), (5, 0)])
def test_rank_is_the_number_dask_worker_appends(name, rank):
    assert rank_of(name) == rank


def test_each_rank_keeps_its_own_device_of_the_job():
    assert [device_for(r, "4,5,6,7") for r in range(4)] == ["4", "5", "6", "7"]
    assert device_for(1, "GPU-aaaa, GPU-bbbb") == "GPU-bbbb"  # UUIDs, as some sites set them
    assert [device_for(r, None) for r in range(2)] == ["0", "1"]  # the scheduler set nothing
    assert device_for(2, "") == "2"


def test_the_preload_sets_the_worker_process_environment(monkeypatch):
    monkeypatch.setenv(VISIBLE, "2,3")
    dask_setup(SimpleNamespace(name="SLURMCluster-0-1"))
    assert os.environ[VISIBLE] == "3"
