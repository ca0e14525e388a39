"""`sinolc-dist validate` and `sample` on the demo's run, as a user runs them (real subprocesses).

The demo prints its overall accuracy against the synthetic truth; `validate --against demo-truth.tif`
must give the same figure, and points drawn by `sample` and labelled from the truth must give it
within their confidence interval.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sinolc_dist.rundir.layout import RunDir


def sinolc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sinolc_dist.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, float]:
    """The demo, run once: its folder and the accuracy it printed (a share, 0..1)."""
    run_dir = tmp_path_factory.mktemp("validate") / "demo"
    done = sinolc("demo", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    printed = re.search(r"overall accuracy against the synthetic truth: ([\d.]+) %", done.stdout)
    return run_dir, float(printed[1]) / 100


def label_from_truth(run_dir: Path, sample_csv: Path, labelled: Path) -> None:
    """Fill the sample's label column with the demo truth at each point."""
    rows = list(csv.DictReader(sample_csv.open()))
    with rasterio.open(run_dir / "demo-truth.tif") as src:
        truth = [int(v[0]) for v in src.sample([(float(r["x"]), float(r["y"])) for r in rows])]
    with labelled.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": t} for r, t in zip(rows, truth, strict=True))


@pytest.mark.slow
def test_against_the_demo_truth_gives_the_accuracy_the_demo_prints(demo_run):
    run_dir, printed = demo_run
    truth = str(run_dir / "demo-truth.tif")
    done = sinolc("validate", "--run-dir", str(run_dir), "--against", truth, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    oa = report["scopes"]["national"]["oa"]
    assert f"{oa * 100:.2f}" == f"{printed * 100:.2f}"
    assert report["scopes"]["national"]["n"] == 2048 * 2048
    assert set(report["scopes"]) == {"national", "420000"}
    folder = RunDir(run_dir).root / "validation" / "against"
    assert (folder / "agreement.tif").is_file() and (folder / "confusion.png").is_file()
    tables = sinolc("validate", "--run-dir", str(run_dir), "--against", truth)
    assert tables.returncode == 0 and "Hubei" in tables.stdout and f"{printed * 100:.2f}" in tables.stdout


@pytest.mark.slow
def test_against_on_a_local_cluster_gives_the_same_figures(demo_run, tmp_path):
    run_dir, printed = demo_run
    profile = tmp_path / "two.yaml"
    profile.write_text("local: {n_workers: 2, threads_per_worker: 1, torch_threads: 1, memory_limit: 2GiB}\n")
    done = sinolc("validate", "--run-dir", str(run_dir), "--against", str(run_dir / "demo-truth.tif"),
                  "--resample", "nearest", "--cluster", str(profile), "--json")
    assert done.returncode == 0, done.stderr
    assert f"{json.loads(done.stdout)['scopes']['national']['oa'] * 100:.2f}" == f"{printed * 100:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("strata", ["none", "class"])
def test_sampled_points_labelled_from_the_truth_hold_the_accuracy_in_their_interval(demo_run, tmp_path,
                                                                                    strata):
    run_dir, printed = demo_run
    sample_csv = tmp_path / "sample.csv"
    drawn = sinolc("sample", "--run-dir", str(run_dir), "--n", "1500", "--strata", strata, "--seed", "11",
                   "--out", str(sample_csv))
    assert drawn.returncode == 0, drawn.stderr
    assert "sample of 1500 points (seed 11)" in drawn.stdout
    label_from_truth(run_dir, sample_csv, tmp_path / "labelled.csv")
    done = sinolc("validate", "--run-dir", str(run_dir), "--points", str(tmp_path / "labelled.csv"),
                  "--strata", strata, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["used"] == 1500
    figures = report["stratified"] if strata == "class" else report["scopes"]["national"]
    lo, hi = figures["oa_ci95"]
    assert lo <= printed <= hi, (lo, printed, hi)


@pytest.mark.slow
def test_official_statistics_and_the_one_line_errors(demo_run, tmp_path):
    run_dir, _ = demo_run
    doc = json.loads((run_dir / "stats" / "classes_km2.json").read_text())
    ours = doc["provinces"][0]["km2"]
    official = tmp_path / "official.csv"
    with official.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["province", "class", "km2"])
        writer.writerows(["Hubei", code, km2 * 1.1] for code, km2 in ours.items() if km2)
    done = sinolc("validate", "--run-dir", str(run_dir), "--stats", str(official), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["overall"] == pytest.approx(0.1 / 1.1, rel=1e-6)
    neither = sinolc("validate", "--run-dir", str(run_dir))
    assert neither.returncode == 2 and neither.stderr.strip().count("\n") == 0
    assert "error: validate needs exactly one of --points FILE, --against MAP.tif" in neither.stderr
    misplaced = sinolc("validate", "--run-dir", str(run_dir), "--stats", str(official), "--cluster", "local")
    assert misplaced.returncode == 2 and "--cluster applies to --against only" in misplaced.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("lon,lat,kind\n113.7,30.95,2\n")
    no_class = sinolc("validate", "--run-dir", str(run_dir), "--points", str(bad))
    assert no_class.returncode == 2 and "--class-column" in no_class.stderr
    assert "Traceback" not in no_class.stderr
    assert np.isfinite(doc["total"]["total"])
