"""Example batch profiles shared by the cluster tests: one per scheduler, their common keys and headers."""

from __future__ import annotations

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
