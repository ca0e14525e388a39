"""Cluster profiles → dask-jobqueue clusters, checked on their job scripts (no scheduler needed)."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from sinolc_dist.cluster.core import build_cluster, open_cluster
from sinolc_dist.cluster.profiles import check_profile, lifetime_args, task_resources, walltime_seconds
from sinolc_dist.errors import ConfigError
from sinolc_dist.stages.workflow import load_profile

PROFILES = {
    "slurm": {"queue": "gpu", "account": "proj-a", "job_cpu": 8, "memory": "64GiB",
              "job_extra_directives": ["--gres=gpu:1"]},
    "pbs": {"queue": "gpu", "account": "proj-a", "memory": "64GB",
            "resource_spec": "select=1:ncpus=8:ngpus=1:mem=64GB"},
    "sge": {"queue": "gpu.q", "project": "proj-a", "memory": "64GB", "resource_spec": "gpu=1",
            "job_extra_directives": ["-pe smp 8"]},
}
COMMON = {"cores": 2, "processes": 1, "walltime": "02:00:00", "interface": "lo",
          "job_script_prologue": ["module load cuda/12.4", "conda activate sinolc"],
          "worker_extra_args": ["--resources", "GPU=1"], "minimum_jobs": 1, "maximum_jobs": 4,
          "torch_threads": 2, "tls": True, "watch_interval": 60, "give_up_after": 3}
HEADERS = {
    "slurm": ["#SBATCH -p gpu", "#SBATCH -A proj-a", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G",
              "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:1"],
    "pbs": ["#PBS -q gpu", "#PBS -A proj-a", "#PBS -l select=1:ncpus=8:ngpus=1:mem=64GB",
            "#PBS -l walltime=02:00:00"],
    "sge": ["#$ -q gpu.q", "#$ -P proj-a", "#$ -l gpu=1", "#$ -l h_rt=02:00:00", "#$ -pe smp 8"],
}


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


@pytest.mark.parametrize(("kind", "text", "seconds"), [
    ("slurm", "02:00:00", 7200), ("slurm", "30", 1800), ("slurm", "1-12", 129600),
    ("slurm", "2-00:30:00", 174600), ("slurm", "10:30", 630), ("pbs", "30", 30),
    ("pbs", "48:00:00", 172800), ("sge", "01:30", 90),
])
def test_walltime_forms(kind, text, seconds):
    assert walltime_seconds(kind, text) == seconds


def test_lifetime_margin_bounds():
    assert lifetime_args(600) == ["--lifetime", "300s", "--lifetime-stagger", "100s"]
    assert lifetime_args(48 * 3600) == ["--lifetime", f"{48 * 3600 - 1800}s", "--lifetime-stagger", "600s"]


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
        check_profile(kind, {**PROFILES[kind], **COMMON, **override})
    for needle in needles:
        assert needle in str(err.value)


def test_unquoted_yaml_walltime_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("slurm:\n  cores: 1\n  memory: 2GB\n  walltime: 24:00:00\n")
    with pytest.raises(ConfigError, match="quoted"):  # YAML 1.1 reads 86400: SLURM would take minutes
        load_profile(str(path))


@pytest.mark.parametrize("name", ["slurm", "pbs", "sge"])
def test_shipped_profiles_are_valid(name):
    kind, settings = load_profile(name)
    assert kind == name
    check_profile(kind, settings)


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


def test_tasks_ask_for_a_gpu_only_where_workers_declare_one():
    assert task_resources({"worker_extra_args": ["--resources", "GPU=1"]}) == {"GPU": 1}
    assert task_resources({"worker_extra_args": ["--lifetime", "1h"]}) is None
    assert task_resources({}) is None


def test_relative_log_directory_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cluster = build_cluster("pbs", {**PROFILES["pbs"], **COMMON, "log_directory": "wlogs"}, Path("run"))
    try:  # PBS jobs start in the log directory: a relative one would be looked for inside itself
        assert cluster.workers == {} and f"#PBS -e {tmp_path.resolve()}/wlogs" in cluster.job_script()
    finally:
        cluster.close()


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of these processes."""
    return [(c.laddr.ip, c.laddr.port) for pid in pids
            for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]


def workers_listening(client) -> dict[str, list[tuple[str, int]]]:
    """Each worker's listening sockets (its process and its nanny's) and its dashboard's port."""
    def own(dask_worker) -> tuple[list[tuple[str, int]], int]:
        import os

        import psutil
        pids = [os.getpid(), os.getppid()]
        socks = [(c.laddr.ip, c.laddr.port) for pid in pids
                 for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        return socks, dask_worker.http_server.port

    return client.run(own)


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
