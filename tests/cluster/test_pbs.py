"""PBS: its resource requests, job scripts and walltimes, and the scheduler contract on real PBS commands.

SLURM's PBS wrappers (``qsub``/``qdel``/``qstat`` of Debian's slurm-wlm-torque, unpacked into a
private prefix by ``sudo cluster/local-pbs/start.sh``, over the SLURM of
``cluster/local-slurm/start.sh``); their folder goes first on PATH in these tests only, since
Grid Engine's ``qsub`` is the one in /usr/bin.  PBS jobs start in their log directory, so the
shared run uses a relative run directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sinolc_dist.cluster.core import build_cluster
from sinolc_dist.cluster.pbs import pbs_request
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages.workflow import load_profile
from tests.cluster.scenarios import SchedulerContract

PBS_BIN = Path(os.environ.get("SINOLC_PBS_PREFIX", "/opt/pbs-on-slurm")) / "usr" / "bin"
ROOT = Path(__file__).resolve().parents[2]


def _answer(*cmd: str) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def _why_no_pbs() -> str | None:
    if not (PBS_BIN / "qsub").exists():
        return (f"no PBS commands: {PBS_BIN}/qsub is missing (sudo cluster/local-slurm/start.sh "
                "&& sudo cluster/local-pbs/start.sh)")
    if shutil.which("sinfo") is None:
        return "no SLURM under the PBS wrappers: sinfo is not on PATH"
    rc, out = _answer("sinfo", "-h", "-o", "%T")
    if rc:
        return f"SLURM (under the PBS wrappers) does not answer: {out}"
    if not {"idle", "mixed"} & set(out.split()):
        return f"no idle SLURM node under the PBS wrappers (sinfo states: {out or 'none'})"
    return None


NO_PBS = _why_no_pbs()
NEEDS_PBS = [pytest.mark.pbs, pytest.mark.slow, pytest.mark.skipif(NO_PBS is not None, reason=NO_PBS or "")]


def _job_script(tmp_path: Path, settings: dict[str, Any]) -> list[str]:
    cluster = build_cluster("pbs", settings, tmp_path)
    try:
        return cluster.job_script().splitlines()
    finally:
        cluster.close()


@pytest.mark.parametrize(("spec", "headers"), [
    ("select=1:ncpus=8:ngpus=1:mem=64GB", ["#PBS -l select=1:ncpus=8:ngpus=1:mem=64GB"]),
    ("nodes=1:ppn=8:gpus=1,mem=64gb", ["#PBS -l nodes=1:ppn=8:gpus=1,mem=64gb"]),
    (None, ["#PBS -l select=1:ncpus=2:mem=60GB"]),  # dask-jobqueue's default is the select form
])
def test_job_script_resource_forms(tmp_path, spec, headers):
    """PBS Pro's select form (the shipped profile), Torque's nodes/ppn form, and the default."""
    settings = {"queue": "gpu", "cores": 2, "memory": "64GB", "walltime": "02:00:00", "interface": "lo"}
    if spec:
        settings["resource_spec"] = spec
    lines = _job_script(tmp_path, settings)
    for header in [*headers, "#PBS -q gpu", "#PBS -l walltime=02:00:00"]:
        assert header in lines


@pytest.mark.parametrize(("spec", "needles"), [
    ("select=1:ncpus=1:mem=64GB", ["'resource_spec' asks 1 CPU(s) but 'cores' is 2"]),
    ("nodes=1:ppn=8,mem=32gb", ["'resource_spec' asks less memory (mem=) than 'memory' ('64GB')",
                                "lower 'memory' or raise mem="]),
])
def test_request_smaller_than_the_worker_is_refused(tmp_path, spec, needles):
    settings = {"queue": "gpu", "cores": 2, "memory": "64GB", "resource_spec": spec}
    with pytest.raises(ConfigError) as err:
        build_cluster("pbs", settings, tmp_path)
    for needle in needles:
        assert needle in str(err.value)


def test_resource_request_forms_are_read():
    assert pbs_request("select=1:ncpus=8:ngpus=1:mem=64GB") == {"cpus": 8, "mem": 64 * 1024 ** 3}
    assert pbs_request("nodes=1:ppn=4:gpus=1,mem=512mb") == {"cpus": 4, "mem": 512 * 1024 ** 2}
    assert pbs_request("walltime=01:00:00") == {}


@pytest.mark.parametrize(("text", "seconds"), [("30", 30), ("48:00:00", 172800), ("10:30", 630)])
def test_walltime_forms(text, seconds):
    """One number is seconds; PBS has no days form."""
    assert scheduler("pbs").walltime_seconds(text) == seconds
    with pytest.raises(ConfigError, match=r"'walltime'.*HH:MM:SS"):
        scheduler("pbs").walltime_seconds("1-00:00:00")


def test_relative_log_directory_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = {"queue": "gpu", "cores": 2, "memory": "64GB", "walltime": "02:00:00", "interface": "lo",
                "log_directory": "wlogs"}
    cluster = build_cluster("pbs", settings, Path("run"))
    try:  # PBS jobs start in the log directory: a relative one would be looked for inside itself
        assert cluster.workers == {} and f"#PBS -e {tmp_path.resolve()}/wlogs" in cluster.job_script()
    finally:
        cluster.close()


class TestPbs(SchedulerContract):
    """The scheduler contract on SLURM's PBS wrappers, and PBS's own refusals."""

    pytestmark = NEEDS_PBS
    kind = "pbs"
    kill_command: ClassVar[list[str]] = ["qdel"]
    driver_queue = "debug"
    refused_queue_said = "Batch job submission failed: Invalid partition name specified"
    dying_start: ClassVar[dict[str, Any]] = {
        "job_script_prologue": ["source /nonexistent/conda.sh || exit 1"]}
    dying_said = "job_state = C"
    dying_key = "'job_script_prologue'"
    relative_run_dir = True

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def pbs_commands_first(cls) -> Iterator[None]:
        """The wrappers' folder first on PATH for this class (Grid Engine's qsub is in /usr/bin)."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")
            yield

    def settings(self, job_name: str, **extra: object) -> dict[str, Any]:
        """The profile the README shows for the local scheduler (cluster/local-pbs/pbs.yaml)."""
        loaded, settings = load_profile(str(ROOT / "cluster" / "local-pbs" / "pbs.yaml"))
        assert loaded == "pbs"
        return {**settings, "job_name": job_name, **extra}

    def running(self, job_name: str) -> list[str]:
        """``qstat``'s running jobs of that name (PBS shows 16 characters of it)."""
        out = subprocess.run(["qstat"], capture_output=True, text=True, check=True).stdout
        rows = [ln.split() for ln in out.splitlines()[2:]]
        return [r[0] for r in rows if len(r) >= 6 and r[1] == job_name[:16] and r[4] == "R"]

    def worker_logs(self, rundir: RunDir, job_name: str) -> dict[str, str]:
        """The wrappers' ``<script>.o<id>``/``.e<id>`` files."""
        logs: dict[str, str] = {}
        for p in rundir.worker_logs.iterdir():
            m = re.search(r"\.[oe](\d+)$", p.name)
            if m:
                logs[m[1]] = logs.get(m[1], "") + p.read_text(errors="replace")
        return logs

    def cancel_all(self, job_name: str) -> None:
        """The wrappers' qdel takes ids only; the jobs are SLURM's."""
        subprocess.run(["scancel", "-n", job_name], check=False)

    def test_relative_run_dir_resolves_and_logs_each_job(self, shared_run):
        # PBS jobs start in logs/workers: a task's relative store path would be looked for there.
        rundir, summary = shared_run["rundir"], shared_run["summary"]
        assert summary.rundir.root == rundir.root.resolve()
        log = shared_run["log"]
        assert re.search(r"pbs cluster: scheduler tls://127\.0\.0\.1:\d+, dashboard http://127\.0\.0\.1:",
                         log)
        jobs = set(re.findall(r"pbs worker job (\d+) submitted", log))
        connected = set(re.findall(r"pbs job (\d+) connected: worker tls://127\.0\.0\.1:\d+ \(pid \d+", log))
        logs = self.worker_logs(rundir, shared_run["job_name"])
        assert len(jobs) >= 2 and connected and connected <= jobs & set(logs), log
        assert "cancelling worker job(s) " in log and " lost:" not in log

    def test_more_gpus_than_a_node_has_is_refused_naming_the_key(self, tmp_path):
        # The local SLURM under the PBS wrappers has two (fake) GPUs: four is more than its node has.
        name = f"sinolc-t{uuid.uuid4().hex[:8]}"
        try:
            text = self.refusal(tmp_path, name, minimum_jobs=1, maximum_jobs=1,
                                resource_spec="nodes=1:ppn=1:gpus=4,mem=2gb")
        finally:
            self.cancel_all(name)
        assert "Requested node configuration is not available" in text, text
        assert ("change the pbs profile's 'gpus_per_job' or 'resource_spec' (ngpus=/gpus=, ncpus=/ppn=, "
                "mem=: more than any node has) (now resource_spec: 'nodes=1:ppn=1:gpus=4,mem=2gb')"
                ) in text, text
