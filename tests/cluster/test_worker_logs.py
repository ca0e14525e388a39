"""Local worker processes log to files, not the driver's terminal, with SIGINT kept away."""

from __future__ import annotations

import logging
import signal

import pytest

from sinolc_dist.cluster.core import open_cluster


@pytest.mark.slow
def test_local_worker_processes_log_to_files_not_the_drivers_terminal(tmp_path, capfd):
    with open_cluster("local", {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB"},
                      tmp_path) as client:
        names = {w["name"] for w in client.scheduler_info()["workers"].values()}
        handlers = client.run(signal.getsignal, signal.SIGINT)  # the plugin's import kept SIGINT away
        # (stdlib callables only: a function of this module would import the clusters module there)
        client.run(logging.getLogger("distributed.worker").error, "heartbeat failed: scheduler gone")
    out, err = capfd.readouterr()
    assert "heartbeat failed" not in out + err
    logs = {p.name: p.read_text() for p in (tmp_path / "logs" / "workers").glob("local-*.log")}
    assert set(logs) == {f"local-{n}.log" for n in names}
    assert all("ERROR - heartbeat failed: scheduler gone" in t for t in logs.values())
    assert set(handlers.values()) == {signal.SIG_IGN}
