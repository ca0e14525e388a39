"""Cluster profiles → dask-jobqueue clusters, checked on their job scripts (no scheduler needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinolc_dist.cluster.core import build_cluster, open_cluster
from sinolc_dist.errors import ConfigError
from tests.cluster.examples import COMMON, HEADERS, PROFILES


@pytest.fixture
def job_script(tmp_path):
    """Build a cluster from PROFILES[kind] + COMMON + overrides; return its worker job script."""
    built = []

    def make(kind: str, **override) -> str:
        cluster = build_cluster(kind, {**PROFILES[kind], **COMMON, **override}, tmp_path)
        built.append(cluster)
        return cluster.job_script()

    yield make
    for cluster in built:
        cluster.close()


def _arg(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


@pytest.mark.parametrize("kind", ["slurm", "pbs", "sge"])
def test_job_script_carries_the_profile(job_script, tmp_path, kind):
    script = job_script(kind)
    lines = script.splitlines()
    for header in HEADERS[kind]:
        assert header in lines
    assert "module load cuda/12.4\nconda activate sinolc\n" in script
    worker = next(ln for ln in lines if "distributed.cli.dask_worker" in ln).split()
    assert _arg(worker, "--resources") == "GPU=1"
    assert _arg(worker, "--nthreads") == "2"
    # Walltime 2 h → a 12 min margin: workers retire after 108 min ± 4 min, before the job is killed.
    assert _arg(worker, "--lifetime") == "6480s" and _arg(worker, "--lifetime-stagger") == "240s"
    # TLS: scheduler on loopback, the workers' certificates in the run directory.
    assert worker[3].startswith("tls://127.0.0.1:")
    assert _arg(worker, "--protocol") == "tls://"
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        path = Path(_arg(worker, flag))
        assert path.parent == tmp_path.resolve() / ".dask-tls" and path.is_file()
    assert str(tmp_path.resolve() / "logs" / "workers") in script
    assert _arg(worker, "--dashboard-address") == "127.0.0.1:0"  # not dask worker's 0.0.0.0
    for own in ("minimum_jobs", "maximum_jobs", "torch_threads", "watch_interval", "give_up_after"):
        assert own not in script


def test_profile_lifetime_kept_tls_off_and_loopback_by_default(tmp_path):
    settings = {**PROFILES["slurm"], **COMMON, "tls": False, "interface": None,
                "worker_extra_args": ["--lifetime", "50m", "--lifetime-stagger", "5m"]}
    cluster = build_cluster("slurm", settings, tmp_path)
    try:
        worker = next(ln for ln in cluster.job_script().splitlines() if "dask_worker" in ln).split()
        assert worker.count("--lifetime") == 1 and _arg(worker, "--lifetime") == "50m"
        assert "--tls-key" not in worker and worker[3].startswith("tcp://127.0.0.1:")
        assert _arg(worker, "--dashboard-address") == "127.0.0.1:0"
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    finally:
        cluster.close()


@pytest.mark.parametrize(("kind", "command"), [("slurm", "sbatch"), ("pbs", "qsub"), ("sge", "qsub")])
def test_missing_scheduler_command(tmp_path, monkeypatch, kind, command):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=f"needs the `{command}` command"), \
            open_cluster(kind, {**PROFILES[kind], **COMMON}, tmp_path):
        pass


def test_refused_submission_quotes_the_scheduler(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid account' >&2\nexit 1\n")
    (bin_dir / "scancel").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConfigError, match=r"`sbatch` refused the worker job: sbatch: error: "
                                          r"Batch job submission failed: Invalid account"), \
            open_cluster("slurm", {**PROFILES["slurm"], **COMMON}, tmp_path):
        pass


