"""Multi-GPU worker jobs: each scheduler's job script asks N GPUs and starts N pinned workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sinolc_dist.cluster.core import build_cluster
from sinolc_dist.cluster.gpus import PIN_MODULE
from sinolc_dist.cluster.profiles import check_profile, task_resources
from sinolc_dist.errors import ConfigError

BASE: dict[str, dict[str, Any]] = {
    "slurm": {"queue": "gpu", "cores": 8, "memory": "64GB", "walltime": "02:00:00", "interface": "lo"},
    "pbs": {"queue": "gpu", "cores": 8, "memory": "64GB", "walltime": "02:00:00", "interface": "lo"},
    "sge": {"queue": "gpu.q", "cores": 8, "memory": "64GB", "walltime": "02:00:00", "interface": "lo"},
}


def job_script(tmp_path: Path, kind: str, **extra: object) -> str:
    cluster = build_cluster(kind, {**BASE[kind], **extra}, tmp_path)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.parametrize(("kind", "extra", "request_line"), [
    ("slurm", {}, "#SBATCH --gres=gpu:4"),
    ("pbs", {}, "#PBS -l select=1:ncpus=8:mem=60GB:ngpus=4"),
    ("pbs", {"resource_spec": "select=1:ncpus=8:mem=64GB"}, "#PBS -l select=1:ncpus=8:mem=64GB:ngpus=4"),
    ("pbs", {"resource_spec": "nodes=1:ppn=8,mem=64gb"}, "#PBS -l nodes=1:ppn=8:gpus=4,mem=64gb"),
    ("sge", {}, "#$ -l gpu=4"),
    ("sge", {"resource_spec": "h_vmem=8G"}, "#$ -l h_vmem=8G,gpu=4"),
])
def test_a_four_gpu_job_asks_four_gpus_and_starts_four_pinned_workers(tmp_path, kind, extra, request_line):
    script = job_script(tmp_path, kind, gpus_per_job=4, **extra)
    lines = script.splitlines()
    assert request_line in lines, script
    assert "--nworkers 4" in script and "--nthreads 2" in script, script  # 8 cores split four ways
    assert "--resources GPU=1" in script and f"--preload {PIN_MODULE}" in script, script


def test_a_one_gpu_job_is_one_worker_without_a_pin(tmp_path):
    script = job_script(tmp_path, "slurm", gpus_per_job=1)
    assert "#SBATCH --gres=gpu:1" in script.splitlines() and "--resources GPU=1" in script
    assert "--nworkers" not in script and PIN_MODULE not in script, script


def test_a_matching_gpu_line_of_the_profile_is_kept(tmp_path):
    script = job_script(tmp_path, "slurm", gpus_per_job=2, job_extra_directives=["--gres=gpu:a100:2"],
                        worker_extra_args=["--resources", "GPU=1"])
    assert script.count("--gres=gpu") == 1 and script.count("--resources GPU=1") == 1, script


def test_tasks_ask_one_gpu_of_a_multi_gpu_worker():
    assert task_resources({"gpus_per_job": 4}) == {"GPU": 1}
    assert task_resources({}) is None


@pytest.mark.parametrize(("kind", "extra", "needle"), [
    ("slurm", {"gpus_per_job": 0}, "'gpus_per_job' must be a whole number of GPUs >= 1 (got 0)"),
    ("slurm", {"gpus_per_job": "4"}, "'gpus_per_job' must be a whole number of GPUs >= 1 (got '4')"),
    ("slurm", {"gpus_per_job": 4, "processes": 1}, "'processes' must equal gpus_per_job (4)"),
    ("slurm", {"gpus_per_job": 16}, "'cores' must be at least gpus_per_job (16)"),
    ("slurm", {"gpus_per_job": 4, "worker_extra_args": ["--resources", "GPU=4"]},
     "'worker_extra_args' asks --resources 'GPU=4'"),
])
def test_impossible_gpu_profiles_are_refused_naming_the_key(kind, extra, needle):
    with pytest.raises(ConfigError) as err:
        check_profile(kind, {**BASE[kind], **extra})
    assert needle in str(err.value)


@pytest.mark.parametrize(("kind", "extra", "needle"), [
    ("slurm", {"job_extra_directives": ["--gres=gpu:1"]},
     "'job_extra_directives' asks 1 GPU(s) (--gres=gpu:1)"),
    ("slurm", {"job_extra_directives": ["--gpus=8"]}, "'job_extra_directives' asks 8 GPU(s)"),
    ("pbs", {"resource_spec": "select=1:ncpus=8:ngpus=1:mem=64GB"}, "'resource_spec' asks 1 GPU(s)"),
    ("sge", {"resource_spec": "gpu=1"}, "'resource_spec' asks 1 GPU(s) (gpu=1) but gpus_per_job is 4"),
])
def test_a_gpu_request_that_disagrees_is_refused(tmp_path, kind, extra, needle):
    with pytest.raises(ConfigError) as err:
        build_cluster(kind, {**BASE[kind], "gpus_per_job": 4, **extra}, tmp_path)
    assert needle in str(err.value) and "gpus_per_job writes it" in str(err.value)
