"""The driver as a batch job: its script (rendered and run by bash), submission, --dry-run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinolc_dist.errors import ConfigError, RunDirError
from sinolc_dist.stages import infer
from sinolc_dist.stages.infer import RunRequest
from sinolc_dist.stages.submit import preview, render_driver_script, submit
from sinolc_dist.stages.workflow import ModelChoice, parse_overrides

SETTINGS = {"queue": "gpu", "account": "proj-a", "cores": 1, "memory": "2GB",
            "job_script_prologue": ["module load cuda/12.4", "export SINOLC_PROLOGUE=ran"]}
REGION = "bbox:114.0,30.0,114.01,30.01"


def _req(tmp_path: Path, **kw) -> RunRequest:
    return RunRequest(tmp_path / "run", kw.pop("region", REGION), "demo", "slurm", **kw)


def test_slurm_driver_script(tmp_path):
    script = render_driver_script("slurm", SETTINGS, _req(tmp_path, checkpoint="m.pt", mosaic=False),
                                  walltime="72:00:00", executable="/opt/env/bin/sinolc-dist")
    lines = script.splitlines()
    run = tmp_path.resolve() / "run"
    for line in ("#SBATCH -J sinolc-driver", "#SBATCH -p gpu", "#SBATCH -A proj-a", "#SBATCH -t 72:00:00",
                 f"#SBATCH -o {run}/logs/driver-%j.out", "module load cuda/12.4", "set -eo pipefail",
                 f"exec /opt/env/bin/sinolc-dist run --region {REGION} --workflow demo --cluster slurm "
                 f"--run-dir {run} --checkpoint m.pt --no-mosaic"):
        assert line in lines
    assert lines.index("module load cuda/12.4") < lines.index("set -eo pipefail")
    assert "ssh -N -L 8787:127.0.0.1:PORT $(hostname)" in script


@pytest.mark.parametrize(("kind", "needles"), [
    ("pbs", ["#PBS -q debug", "#PBS -A proj-a", "#PBS -l select=1:ncpus=2:mem=8GB",
             "#PBS -l walltime=48:00:00", "driver-${PBS_JOBID%%.*}.out"]),
    ("sge", ["#$ -q debug", "#$ -P proj-b", "#$ -l h_rt=48:00:00", "#$ -S /bin/bash",
             "driver-$JOB_ID.out"]),
])
def test_pbs_and_sge_driver_scripts(tmp_path, kind, needles):
    settings = {**SETTINGS, "project": "proj-b"} if kind == "sge" else SETTINGS
    script = render_driver_script(kind, settings, _req(tmp_path), queue="debug")
    for needle in needles:
        assert needle in script


def test_driver_script_runs_and_passes_arguments_exactly(tmp_path):
    """bash runs the script: prologue, cd, log redirection and every argument intact."""
    echo = tmp_path / "fake-sinolc"
    echo.write_text('#!/bin/sh\necho "prologue=$SINOLC_PROLOGUE cwd=$(pwd)"\nprintf "<%s>\\n" "$@"\n')
    echo.chmod(0o755)
    region = str(tmp_path / "my region's.geojson")
    script = render_driver_script("sge", SETTINGS, _req(tmp_path, region=region), executable=str(echo),
                                  cwd=tmp_path)
    (tmp_path / "run" / "logs").mkdir(parents=True)
    path = tmp_path / "driver.sh"
    path.write_text(script.replace("module load cuda/12.4", "true"))
    proc = subprocess.run(["bash", str(path)], env={**os.environ, "JOB_ID": "77"}, timeout=30,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "run" / "logs" / "driver-77.out").read_text().splitlines()
    assert log[0].startswith("sinolc-dist driver: job 77 on ")
    assert f"prologue=ran cwd={tmp_path.resolve()}" in log
    assert log[log.index("<--region>") + 1] == f"<{region}>"


def test_driver_script_passes_the_model_flags_on(tmp_path):
    """What `submit --arch … --override …` asks reaches the driver's `run` unchanged (bash parses it)."""
    echo = tmp_path / "fake-sinolc"
    echo.write_text('#!/bin/sh\nprintf "<%s>\\n" "$@"\n')
    echo.chmod(0o755)
    choice = ModelChoice("paraformer", None, None, {}, {"classes": ["drop", 1, 2], "mean": [117.67, 130.39]})
    script = render_driver_script("sge", SETTINGS, _req(tmp_path, checkpoint="theirs.pth", model=choice),
                                  executable=str(echo), cwd=tmp_path)
    (tmp_path / "run" / "logs").mkdir(parents=True)
    path = tmp_path / "driver.sh"
    path.write_text(script.replace("module load cuda/12.4", "true"))
    subprocess.run(["bash", str(path)], env={**os.environ, "JOB_ID": "78"}, timeout=30, check=True)
    args = [a[1:-1] for a in (tmp_path / "run" / "logs" / "driver-78.out").read_text().splitlines()
            if a.startswith("<")]
    assert args[args.index("--arch") + 1] == "paraformer"
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--override"]
    assert parse_overrides(overrides) == {"classes": ["drop", 1, 2], "mean": [117.67, 130.39]}


def test_local_profile_cannot_be_submitted(tmp_path):
    with pytest.raises(ConfigError, match="needs a batch scheduler"):
        submit(RunRequest(tmp_path / "run", REGION, "demo", "local"))


def _fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sbatch: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", sbatch), ("scancel", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_submit_writes_the_script_and_reports_the_job(tmp_path, monkeypatch):
    _fake_bin(tmp_path, monkeypatch,
              'cp "$1" "$(dirname "$0")/submitted.sh"; echo "Submitted batch job 4242"')
    result = submit(_req(tmp_path), walltime="12:00:00", queue="long")
    run = tmp_path.resolve() / "run"
    assert result.job_id == "4242" and result.script == run / "driver.slurm.sh"
    assert result.log == run / "logs" / "driver-4242.out"
    submitted = (tmp_path / "bin" / "submitted.sh").read_text()
    assert submitted == result.script.read_text() and "#SBATCH -p long" in submitted
    text = result.describe()
    for needle in ("driver job: 4242", str(result.log), "squeue -h -o %N -j 4242",
                   "ssh -N -L 8787:127.0.0.1:PORT <driver-node>"):
        assert needle in text


def test_refused_driver_submission_quotes_the_scheduler(tmp_path, monkeypatch):
    _fake_bin(tmp_path, monkeypatch, "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1")
    with pytest.raises(ConfigError, match="refused the driver job: sbatch: error: invalid partition"):
        submit(_req(tmp_path))


def test_dry_run_prints_both_scripts(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "submit", "--region", REGION,
         "--workflow", "demo", "--cluster", "slurm", "--run-dir", str(tmp_path / "run"), "--dry-run"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    driver, worker = proc.stdout.split("# ---- worker job script")
    assert "#SBATCH -J sinolc-driver" in driver and " run --region " in driver
    assert "#SBATCH --gres=gpu:1" in worker and "distributed.cli.dask_worker tls://" in worker
    assert "--resources GPU=1" in worker and "--lifetime " in worker
    run = (tmp_path / "run").resolve()
    assert f"-o {run}/logs/workers/" in worker and f"--tls-ca-file {run}/.dask-tls/" in worker
    assert not (tmp_path / "run").exists()  # no script, no logs/, no .dask-tls/: a dry run writes nothing


def test_dry_run_leaves_the_profile_log_directory_alone(tmp_path):
    logs = tmp_path / "job-logs"
    profile = tmp_path / "slurm-logs.yaml"
    profile.write_text(f"slurm:\n  cores: 1\n  memory: 2GB\n  walltime: '01:00'\n  log_directory: {logs}\n")
    _, worker = preview(RunRequest(tmp_path / "run", REGION, "demo", str(profile)))
    assert f"#SBATCH -o {logs}/sinolc-worker-%J.out" in worker
    assert not logs.exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_submit_checks_the_checkpoint_as_run_does(tmp_path, monkeypatch, dry_run):
    """Issue 15 point 6: a missing checkpoint fails `submit` (dry or not) in one line, writing nothing."""
    _fake_bin(tmp_path, monkeypatch, f'touch "{tmp_path}/sbatch-ran"; echo "Submitted batch job 1"')
    proc = subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "submit", "--region", REGION,
         "--workflow", "demo", "--cluster", "slurm", "--run-dir", str(tmp_path / "run"),
         "--checkpoint", str(tmp_path / "nonexistent.pt"), *dry_run],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == f"error: checkpoint {tmp_path / 'nonexistent.pt'} does not exist: " \
                                  "give a path to a .pt file"
    assert not (tmp_path / "run").exists() and not (tmp_path / "sbatch-ran").exists()


def test_submit_refuses_a_run_directory_started_otherwise(small_run):
    """As `run` would: the driver job would fail on its node after its wait in the queue."""
    rundir, req = small_run["rundir"], small_run["req"]
    rundir.freeze(infer.check_run(req).config, infer.COMPATIBLE)
    before = {p: p.stat().st_mtime_ns for p in rundir.root.rglob("*")}
    other = RunRequest(rundir.root, "bbox:113,30,114,31", req.workflow, "slurm")
    with pytest.raises(RunDirError, match=r"started with another configuration .*region"):
        preview(other)
    assert {p: p.stat().st_mtime_ns for p in rundir.root.rglob("*")} == before
