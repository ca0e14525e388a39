"""Grid Engine: its job scripts and walltimes, and the scheduler contract on a real Grid Engine.

A single-host Son of Grid Engine (``sudo cluster/local-sge/start.sh``).  Beyond the shared
scenarios (tests/cluster/scenarios.py), submissions Grid Engine refuses quote its words and
name the profile key; a job held in error at start is deleted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sinolc_dist.cluster.core import build_cluster
from sinolc_dist.cluster.registry import scheduler
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages.workflow import load_profile
from tests.cluster.scenarios import SchedulerContract

ROOT = Path(__file__).resolve().parents[2]


def _answer(*cmd: str) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def _why_no_sge() -> str | None:
    if shutil.which("qconf") is None:
        return "no Grid Engine: qconf is not on PATH (start one: sudo cluster/local-sge/start.sh)"
    try:
        proc = subprocess.run(["qstat", "-f", "-q", "all.q"], capture_output=True, text=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Grid Engine does not answer: {exc}"
    if proc.returncode:
        return f"Grid Engine does not answer: {' '.join((proc.stdout + proc.stderr).split())}"
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("all.q@")]
    if not rows:
        return "Grid Engine has no queue instance all.q@<host>"
    if all(len(r) > 5 for r in rows):  # a sixth column is a state: u(nknown), E(rror), d(isabled)…
        return f"Grid Engine's all.q is not usable (states: {' '.join(r[5] for r in rows)})"
    return None


NO_SGE = _why_no_sge()
NEEDS_SGE = [pytest.mark.sge, pytest.mark.slow, pytest.mark.skipif(NO_SGE is not None, reason=NO_SGE or "")]


def test_job_script_gpu_and_parallel_environment(tmp_path):
    settings = {"queue": "gpu.q", "cores": 2, "memory": "64GB", "walltime": "02:00:00", "interface": "lo",
                "resource_spec": "gpu=1,h_vmem=8G", "job_extra_directives": ["-pe smp 8"]}
    cluster = build_cluster("sge", settings, tmp_path)
    try:
        lines = cluster.job_script().splitlines()
    finally:
        cluster.close()
    for header in ("#$ -q gpu.q", "#$ -l gpu=1,h_vmem=8G", "#$ -pe smp 8", "#$ -l h_rt=02:00:00"):
        assert header in lines


@pytest.mark.parametrize(("text", "seconds"), [("01:30", 90), ("45", 45), ("02:00:00", 7200)])
def test_walltime_forms(text, seconds):
    """One number is seconds, as for PBS."""
    assert scheduler("sge").walltime_seconds(text) == seconds


def test_hints_name_grid_engine_keys():
    sge = scheduler("sge")
    assert sge.hint("no suitable queues") == \
        "change the sge profile's 'queue', 'resource_spec' or the -pe line of 'job_extra_directives'"
    assert sge.hint("job rejected: project x does not exist", {"project": "x"}) == \
        "change the sge profile's 'project' (now project: 'x')"
    assert sge.hint("something else") == ("check the sge profile's queue, project, memory, walltime, "
                                          "resource_spec and job_extra_directives")


class TestSge(SchedulerContract):
    """The scheduler contract on Grid Engine, and Grid Engine's own refusals."""

    pytestmark = NEEDS_SGE
    kind = "sge"
    kill_command: ClassVar[list[str]] = ["qdel"]
    driver_queue = "all.q"
    refused_queue_said = 'Unable to run job: Job was rejected because job requests unknown queue "nope"'
    # A job held in error state at start (its working directory does not exist on the node).
    dying_start: ClassVar[dict[str, Any]] = {"job_extra_directives": ["-pe smp 1", "-wd /nonexistent-sinolc"]}
    dying_said = ("is in an error state before its Dask worker connected: error: can't chdir to "
                  "/nonexistent-sinolc")
    dying_key = "'job_extra_directives' (the job's working directory"
    driver_success = ("failed 0", "exit_status 0")

    def settings(self, job_name: str, **extra: object) -> dict[str, Any]:
        """The profile the README shows for the local scheduler (cluster/local-sge/sge.yaml)."""
        loaded, settings = load_profile(str(ROOT / "cluster" / "local-sge" / "sge.yaml"))
        assert loaded == "sge"
        return {**settings, "job_name": job_name, **extra}

    def running(self, job_name: str) -> list[str]:
        """``qstat -s r -xml``'s jobs of that name."""
        out = subprocess.run(["qstat", "-s", "r", "-xml"], capture_output=True, text=True, check=True).stdout
        return [j.findtext("JB_job_number") or "" for j in ET.fromstring(out).iter("job_list")
                if j.findtext("JB_name") == job_name]

    def worker_logs(self, rundir: RunDir, job_name: str) -> dict[str, str]:
        """Grid Engine's ``<job name>.o<id>``/``.e<id>`` files."""
        logs: dict[str, str] = {}
        for p in rundir.worker_logs.iterdir():
            m = re.search(r"\.[oe](\d+)$", p.name)
            if m:
                logs[m[1]] = logs.get(m[1], "") + p.read_text(errors="replace")
        return logs

    def cancel_all(self, job_name: str) -> None:
        """``qdel`` by name."""
        subprocess.run(["qdel", job_name], capture_output=True, check=False)

    def settled(self, said: str) -> bool:
        """qacct's record comes a moment after the job ends."""
        return "exit_status" in said

    def assert_no_job_left(self, job_name: str) -> None:
        """Nothing runs, and the job held in error state was deleted."""
        super().assert_no_job_left(job_name)
        assert "do not exist" in _answer("qstat", "-j", job_name)[1]

    @pytest.mark.parametrize(("extra", "said", "key"), [
        pytest.param({"resource_spec": "gpu=1"}, 'Unable to run job: unknown resource "gpu"',
                     "'gpus_per_job' or 'resource_spec' (gpu=) (now resource_spec: 'gpu=1')",
                     id="unknown-resource"),
        pytest.param({"job_extra_directives": ["-pe mpi 1"]},
                     'the requested parallel environment "mpi" does not exist',
                     "'job_extra_directives' (the -pe line)", id="unknown-pe"),
    ])
    def test_refused_worker_job_names_the_key(self, tmp_path, extra, said, key):
        name = f"sinolc-t{uuid.uuid4().hex[:8]}"
        try:
            text = self.refusal(tmp_path, name, minimum_jobs=1, maximum_jobs=1, **extra)
            assert said in text and f"change the sge profile's {key}" in text, text
            self.assert_no_job_left(name)
        finally:
            self.cancel_all(name)
