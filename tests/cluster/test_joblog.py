"""Worker arrivals, retirements and losses in the driver's log (on a local cluster)."""

from __future__ import annotations

import logging
import os
import re
import signal
import time

import pytest

from sinolc_dist.cluster.core import open_cluster


@pytest.mark.slow
def test_worker_arrivals_retirements_and_losses_are_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sinolc_dist.cluster.core")
    local = {"n_workers": 3, "threads_per_worker": 1, "memory_limit": "1GiB",
             "silence_logs": False}  # LocalCluster would set the log capture's level to WARNING
    with open_cluster("local", local, tmp_path) as client:
        a, b, c = sorted(client.scheduler_info()["workers"])
        client.retire_workers([a])  # as adaptive scaling does
        # As a worker's --lifetime does when it runs out.
        client.run(lambda dask_worker: dask_worker.loop.add_callback(
            dask_worker.close_gracefully, reason="worker-lifetime-reached"), workers=[b])
        os.kill(client.run(os.getpid, workers=[c])[c], signal.SIGKILL)  # a job killed under it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and " lost: " not in caplog.text:
            time.sleep(0.2)
    text = caplog.text
    for worker in (a, b, c):
        assert re.search(rf"local worker \d+ connected: worker {worker} \(pid \d+ on 127\.0\.0\.1\)", text)
    assert re.search(rf"local worker \d+ retired by adaptive scaling: worker {a}", text)
    assert re.search(rf"local worker \d+ retired \(its --lifetime ran out.*\): worker {b}", text)
    assert re.search(rf"local worker \d+ lost: worker {c} left without retiring", text)
    assert text.count(" lost: ") == 1  # closing the cluster loses no worker


