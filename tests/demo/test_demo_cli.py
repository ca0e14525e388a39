"""`sinolc-dist demo` end to end, as a user runs it: real subprocess, LocalCluster, GeoTIFF."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from sinolc_dist.audit.report import audit
from sinolc_dist.legend import SINOLC
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir


def demo(run_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "demo", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_demo_end_to_end_and_rerun(tmp_path):
    run_dir = tmp_path / "demo"
    first = demo(run_dir)
    assert first.returncode == 0, first.stderr
    assert "dashboard: http://127.0.0.1:" in first.stderr
    assert re.search(r"scheduler: (tcp|tls)://127\.0\.0\.1:\d+", first.stderr), first.stderr
    assert "16 chunk(s) done, 0 failed" in first.stderr
    accuracy = float(re.search(r"overall accuracy against the synthetic truth: ([\d.]+) %", first.stdout)[1])
    assert accuracy >= 90.0

    rundir = RunDir(run_dir)
    grid = rundir.read_config().grid
    (tif,) = rundir.mosaics.glob("*.tif")
    with rasterio.open(tif) as src:
        assert src.crs == grid.pyproj_crs
        assert src.nodata == 0
        assert src.colormap(1)[2] == SINOLC.colormap()[2]
        window = grid.bounds_window(*src.bounds)
        assert src.transform == grid.window_transform(window)
        pixels = src.read(1)
    assert np.array_equal(pixels, stores.read_window(stores.open_array(rundir.output, grid), window))
    clean = audit(tif)  # our own mosaic: no duplicated strip, no seam on its tiles
    assert clean.findings == 0, clean.to_dict()

    second = demo(run_dir)
    assert second.returncode == 0, second.stderr
    assert "0 chunk(s) done, 0 failed, 16 skipped" in second.stderr
    assert f"{accuracy:.2f} %" in second.stdout
