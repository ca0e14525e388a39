"""The cluster layer on real PBS-style commands and a real Grid Engine.

``pbs``: SLURM's PBS wrappers (``qsub``/``qdel``/``qstat`` of Debian's slurm-wlm-torque,
unpacked into a private prefix by ``sudo cluster/local-pbs/start.sh``, over the SLURM of
``cluster/local-slurm/start.sh``); their folder goes first on PATH in these tests only, since
Grid Engine's ``qsub`` is the one in /usr/bin.  ``sge``: a single-host Son of Grid Engine
(``sudo cluster/local-sge/start.sh``).  As in tests/test_slurm.py, worker jobs go through the
scheduler with TLS and adaptive scaling, a worker job deleted mid-run (``qdel``) costs no
chunk, the driver itself runs as a batch job, and every output equals a LocalCluster run of
the same scene.  Refused and failed submissions are errors quoting the scheduler.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
from conftest import done_count, kill_busiest_worker_once, run_output

from sinolc_dist.cluster.core import build_cluster, open_cluster
from sinolc_dist.cluster.jobstatus import job_status
from sinolc_dist.errors import ConfigError
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.stages import infer
from sinolc_dist.stages.workflow import load_profile

PBS_BIN = Path(os.environ.get("SINOLC_PBS_PREFIX", "/opt/pbs-on-slurm")) / "usr" / "bin"
ROOT = Path(__file__).resolve().parents[1]


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


NO_PBS, NO_SGE = _why_no_pbs(), _why_no_sge()
NEEDS_PBS = [pytest.mark.pbs, pytest.mark.slow, pytest.mark.skipif(NO_PBS is not None, reason=NO_PBS or "")]
NEEDS_SGE = [pytest.mark.sge, pytest.mark.slow, pytest.mark.skipif(NO_SGE is not None, reason=NO_SGE or "")]


@pytest.fixture(params=[pytest.param("pbs", marks=NEEDS_PBS), pytest.param("sge", marks=NEEDS_SGE)])
def kind(request, monkeypatch) -> str:
    """The scheduler under test; for ``pbs`` the wrappers' folder goes first on PATH."""
    if request.param == "pbs":
        monkeypatch.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")
    return request.param


@pytest.fixture
def job_name(kind):
    """A job name unique to the test; its jobs are deleted afterwards, whatever happened."""
    name = f"sinolc-t{uuid.uuid4().hex[:8]}"
    yield name
    if kind == "pbs":  # the wrappers' qdel takes ids only; the jobs are SLURM's
        subprocess.run(["scancel", "-n", name], check=False)
    else:
        subprocess.run(["qdel", name], capture_output=True, check=False)


def _settings(kind: str, job_name: str, **extra) -> dict:
    """The profile the README shows for the local scheduler (cluster/local-<kind>/<kind>.yaml)."""
    loaded, settings = load_profile(str(ROOT / "cluster" / f"local-{kind}" / f"{kind}.yaml"))
    assert loaded == kind
    return {**settings, "job_name": job_name, **extra}


def _profile(tmp_path: Path, kind: str, job_name: str, **extra) -> str:
    path = tmp_path / f"{kind}-test.yaml"
    path.write_text(yaml.safe_dump({kind: _settings(kind, job_name, **extra)}))
    return str(path)


def _running(kind: str, job_name: str) -> list[str]:
    """Ids of the running jobs called ``job_name``, as the scheduler's qstat lists them."""
    if kind == "pbs":
        out = subprocess.run(["qstat"], capture_output=True, text=True, check=True).stdout
        rows = [ln.split() for ln in out.splitlines()[2:]]
        return [r[0] for r in rows if len(r) >= 6 and r[1] == job_name[:16] and r[4] == "R"]
    out = subprocess.run(["qstat", "-s", "r", "-xml"], capture_output=True, text=True, check=True).stdout
    return [j.findtext("JB_job_number") or "" for j in ET.fromstring(out).iter("job_list")
            if j.findtext("JB_name") == job_name]


def _worker_logs(rundir: RunDir) -> dict[str, str]:
    """Job id → text of the worker logs (PBS wrappers: <script>.e<id>; SGE: <name>.o<id>)."""
    logs: dict[str, str] = {}
    for p in (rundir.root / "logs" / "workers").iterdir():
        m = re.search(r"\.[oe](\d+)$", p.name)
        if m:
            logs[m[1]] = logs.get(m[1], "") + p.read_text(errors="replace")
    return logs


def test_run_through_qsub_equals_local(kind, small_run, reference, tmp_path, job_name):
    rundir, scene = small_run["rundir"], small_run["scene"]
    req = replace(small_run["req"], cluster=_profile(tmp_path, kind, job_name), mosaic=False)
    summary = infer.run(req)
    assert summary.report.done == 12 and done_count(rundir) == 12
    assert np.array_equal(run_output(rundir, scene.window), reference)
    assert summary.dashboard.startswith("http://127.0.0.1:")
    logs = _worker_logs(rundir)
    started = [t for t in logs.values() if re.search(r"Start worker at:\s+tls://127\.0\.0\.1:", t)]
    assert len(started) >= 2, logs  # the workers ran as batch jobs, over TLS on loopback


@pytest.mark.parametrize("kind", [pytest.param("pbs", marks=NEEDS_PBS)], indirect=True)
def test_relative_run_dir_on_pbs(kind, small_run, reference, tmp_path, monkeypatch, job_name):
    # PBS jobs start in logs/workers: a task's relative store path would be looked for there.
    rundir, scene = small_run["rundir"], small_run["scene"]
    monkeypatch.chdir(tmp_path)
    profile = _profile(tmp_path, kind, job_name)
    req = replace(small_run["req"], run_dir=Path(rundir.root.name), cluster=profile, mosaic=False)
    summary = infer.run(req)
    assert summary.report.done == 12 and summary.report.failed == 0 and done_count(rundir) == 12
    assert summary.rundir.root == rundir.root.resolve()
    assert np.array_equal(run_output(rundir, scene.window), reference)
    log = (rundir.logs / "driver.log").read_text()
    assert re.search(r"pbs cluster: scheduler tls://127\.0\.0\.1:\d+, dashboard http://127\.0\.0\.1:", log)
    jobs = set(re.findall(r"pbs worker job (\d+) submitted", log))
    connected = set(re.findall(r"pbs job (\d+) connected: worker tls://127\.0\.0\.1:\d+ \(pid \d+", log))
    assert len(jobs) >= 2 and connected and connected <= jobs & set(_worker_logs(rundir)), log
    assert "cancelling worker job(s) " in log and " lost:" not in log


def test_deleted_worker_job_is_replaced(kind, small_run_one_chunk_tasks, reference, tmp_path, job_name):
    small_run = small_run_one_chunk_tasks
    rundir, scene = small_run["rundir"], small_run["scene"]
    req = replace(small_run["req"], cluster=_profile(tmp_path, kind, job_name), mosaic=False)
    seen: dict[str, object] = {}

    def job_of(address: str) -> str:  # the job a worker runs in, from its logs
        return next(job for job, text in _worker_logs(rundir).items() if address in text)

    delete = kill_busiest_worker_once(seen, job_of, ["qdel"], lambda: _running(kind, job_name))
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        infer.run(req, on_progress=delete)
    assert seen["in_flight"] and seen["replacement"], seen
    assert seen["killed"] not in _running(kind, job_name)
    assert done_count(rundir) == 12
    assert np.array_equal(run_output(rundir, scene.window), reference)


def _wait_for_job(kind: str, job_id: str, timeout: float) -> str:
    """The scheduler's words about a job once it has left the queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, said = job_status(kind, job_id)
        if state != "alive":
            return said
        time.sleep(1)
    raise AssertionError(f"job {job_id} still queued or running after {timeout} s")


def test_driver_submitted_as_a_job(kind, small_run, reference, tmp_path, job_name):
    rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
    queue = "debug" if kind == "pbs" else "all.q"
    proc = subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "submit",
         "--region", req.region, "--workflow", req.workflow, "--cluster", _profile(tmp_path, kind, job_name),
         "--run-dir", str(rundir.root), "--driver-walltime", "00:20:00", "--driver-queue", queue],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"driver job: (\d+)", proc.stdout)[1]
    log_path = rundir.root / "logs" / f"driver-{job_id}.out"
    assert f"log: {log_path}" in proc.stdout
    try:
        said = _wait_for_job(kind, job_id, timeout=300)
    finally:
        subprocess.run(["qdel", job_id], capture_output=True, check=False)
    log = log_path.read_text()
    assert log.startswith(f"sinolc-dist driver: job {job_id} on "), log
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", log), log
    assert "inference: 12 chunk(s) done" in log and "mosaic: " in log, (said, log)
    if kind == "sge":  # qacct's record comes a moment after the job ends
        for _ in range(30):
            if "exit_status" in said:
                break
            time.sleep(1)
            said = job_status(kind, job_id)[1]
        assert "failed 0" in said and "exit_status 0" in said, said
    assert np.array_equal(run_output(rundir, scene.window), reference)


def _refusal(kind: str, run_dir: Path, job_name: str, **extra) -> str:
    with pytest.raises(ConfigError) as err, open_cluster(kind, _settings(kind, job_name, **extra), run_dir):
        pass
    return str(err.value)


def test_unknown_queue_quotes_the_scheduler_and_names_the_key(kind, tmp_path, job_name):
    text = _refusal(kind, tmp_path, job_name, queue="nope", minimum_jobs=1, maximum_jobs=1)
    said = {"pbs": "Batch job submission failed: Invalid partition name specified",
            "sge": 'Unable to run job: Job was rejected because job requests unknown queue "nope"'}[kind]
    assert "`qsub` refused the worker job: " in text and said in text, text
    assert f"change the {kind} profile's 'queue' (now queue: 'nope')" in text, text
    assert not _running(kind, job_name)


@pytest.mark.parametrize(("extra", "said", "key"), [
    pytest.param({"resource_spec": "nodes=1:ppn=1:gpus=1,mem=2gb"},
                 "sbatch: error: Invalid generic resource (gres) specification",
                 "'resource_spec' (ngpus=, or gpus= in the Torque form) "
                 "(now resource_spec: 'nodes=1:ppn=1:gpus=1,mem=2gb')",
                 id="pbs-gpu-on-a-cpu-node", marks=NEEDS_PBS),
    pytest.param({"job_script_prologue": ["source /nonexistent/conda.sh || exit 1"]},
                 "job_state = C", "'job_script_prologue'", id="pbs-job-dies-at-start", marks=NEEDS_PBS),
])
def test_pbs_rejected_or_dead_worker_job(tmp_path, monkeypatch, extra, said, key):
    monkeypatch.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")
    name = f"sinolc-t{uuid.uuid4().hex[:8]}"
    try:
        text = _refusal("pbs", tmp_path, name, minimum_jobs=1, maximum_jobs=1, **extra)
    finally:
        subprocess.run(["scancel", "-n", name], check=False)
    assert said in text and f"change the pbs profile's {key}" in text, text


@pytest.mark.parametrize(("extra", "said", "key"), [
    pytest.param({"resource_spec": "gpu=1"}, 'Unable to run job: unknown resource "gpu"',
                 "'resource_spec' (gpu=) (now resource_spec: 'gpu=1')",
                 id="sge-unknown-resource", marks=NEEDS_SGE),
    pytest.param({"job_extra_directives": ["-pe mpi 1"]},
                 'the requested parallel environment "mpi" does not exist',
                 "'job_extra_directives' (the -pe line)", id="sge-unknown-pe", marks=NEEDS_SGE),
    pytest.param({"job_extra_directives": ["-pe smp 1", "-wd /nonexistent-sinolc"]},
                 "is in an error state before its Dask worker connected: error: can't chdir to "
                 "/nonexistent-sinolc", "'job_extra_directives' (the job's working directory",
                 id="sge-job-held-in-error-at-start", marks=NEEDS_SGE),
])
def test_sge_rejected_or_failed_worker_job(tmp_path, extra, said, key):
    name = f"sinolc-t{uuid.uuid4().hex[:8]}"
    try:
        text = _refusal("sge", tmp_path, name, minimum_jobs=1, maximum_jobs=1, **extra)
        assert said in text and f"change the sge profile's {key}" in text, text
        assert not _running("sge", name)
        assert "do not exist" in _answer("qstat", "-j", name)[1]  # the job in error state was deleted
    finally:
        subprocess.run(["qdel", name], capture_output=True, check=False)


@pytest.mark.parametrize(("spec", "headers"), [
    ("select=1:ncpus=8:ngpus=1:mem=64GB", ["#PBS -l select=1:ncpus=8:ngpus=1:mem=64GB"]),
    ("nodes=1:ppn=8:gpus=1,mem=64gb", ["#PBS -l nodes=1:ppn=8:gpus=1,mem=64gb"]),
    (None, ["#PBS -l select=1:ncpus=2:mem=60GB"]),  # dask-jobqueue's default is the select form
])
def test_pbs_job_script_resource_forms(tmp_path, spec, headers):
    """PBS Pro's select form (the shipped profile), Torque's nodes/ppn form, and the default."""
    settings = {"queue": "gpu", "cores": 2, "memory": "64GB", "walltime": "02:00:00", "interface": "lo"}
    if spec:
        settings["resource_spec"] = spec
    cluster = build_cluster("pbs", settings, tmp_path)
    try:
        lines = cluster.job_script().splitlines()
    finally:
        cluster.close()
    for header in [*headers, "#PBS -q gpu", "#PBS -l walltime=02:00:00"]:
        assert header in lines


def test_sge_job_script_gpu_and_parallel_environment(tmp_path):
    settings = {"queue": "gpu.q", "cores": 2, "memory": "64GB", "walltime": "02:00:00", "interface": "lo",
                "resource_spec": "gpu=1,h_vmem=8G", "job_extra_directives": ["-pe smp 8"]}
    cluster = build_cluster("sge", settings, tmp_path)
    try:
        lines = cluster.job_script().splitlines()
    finally:
        cluster.close()
    for header in ("#$ -q gpu.q", "#$ -l gpu=1,h_vmem=8G", "#$ -pe smp 8", "#$ -l h_rt=02:00:00"):
        assert header in lines


@pytest.mark.parametrize(("spec", "needles"), [
    ("select=1:ncpus=1:mem=64GB", ["'resource_spec' asks 1 CPU(s) but 'cores' is 2"]),
    ("nodes=1:ppn=8,mem=32gb", ["'resource_spec' asks less memory (mem=) than 'memory' ('64GB')",
                                "lower 'memory' or raise mem="]),
])
def test_pbs_request_smaller_than_the_worker_is_refused(tmp_path, spec, needles):
    settings = {"queue": "gpu", "cores": 2, "memory": "64GB", "resource_spec": spec}
    with pytest.raises(ConfigError) as err:
        build_cluster("pbs", settings, tmp_path)
    for needle in needles:
        assert needle in str(err.value)
