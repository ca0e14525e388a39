"""Maps of plans and runs: the chunk raster exactly, the PNGs by their pixels, the CLI options."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.colors import to_rgb

from sinolc_dist.deliver.maps import _PLAN_COLOURS, _STATUS_COLOURS, chunk_raster, plan_map, status_map
from sinolc_dist.errors import InputError
from sinolc_dist.grid import Grid, Window
from sinolc_dist.regions.plan import make_plan
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, ChunkResult, StateStore

COARSE = Grid(chunk=16384, block=512)  # 32x32 km chunks: a province in a few hundred


@pytest.fixture(scope="module")
def hubei():
    return make_plan("湖北", COARSE)


def sinolc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sinolc_dist.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def pixels_of(png: np.ndarray, colour: str) -> int:
    """How many pixels of a PNG are exactly ``colour`` (up to 8-bit rounding)."""
    rgb = np.round(png[..., :3] * 255).astype(int)
    return int((np.abs(rgb - np.round(np.array(to_rgb(colour)) * 255)).max(axis=-1) <= 1).sum())


def test_chunk_raster_is_exact():
    grid = Grid(chunk=4096, block=512)
    rows, cols = np.array([2, 3, 5]), np.array([4, 7, 4])
    image, extent = chunk_raster(grid, rows, cols, np.array([1, 2, 3], np.uint8))
    assert image.dtype == np.uint8
    assert image.shape == (4, 4)
    expected = np.zeros((4, 4), np.uint8)
    expected[0, 0], expected[1, 3], expected[3, 0] = 1, 2, 3
    np.testing.assert_array_equal(image, expected)
    left, bottom, right, top = grid.window_bounds(Window(2 * 4096, 4 * 4096, 6 * 4096, 8 * 4096))
    assert extent == (left, right, bottom, top)


def test_border_chunks_hold_the_border_value():
    plan = make_plan("湖北,湖南", COARSE)
    sel = plan.selection
    values = np.array([2 if len(p) > 1 else 1 for p in sel.provinces], np.uint8)
    image, _ = chunk_raster(plan.grid, sel.rows, sel.cols, values)
    border = [i for i, p in enumerate(sel.provinces) if set(p) == {"420000", "430000"}]
    assert border
    r0, c0 = sel.rows.min(), sel.cols.min()
    assert all(image[sel.rows[i] - r0, sel.cols[i] - c0] == 2 for i in border)
    assert (image == 2).sum() == len(border)
    assert (image == 1).sum() == len(sel) - len(border)


def test_plan_map_draws_a_province(tmp_path, hubei):
    path = plan_map(hubei, tmp_path / "hubei.png")
    assert path == tmp_path / "hubei.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hubei.png"]  # no partial file left
    png = mpimg.imread(path)
    assert png.ndim == 3 and png.shape[2] in (3, 4)
    assert 400 < png.shape[0] <= 1200 and 400 < png.shape[1] <= 1350  # 9×8 in at 150 dpi, cropped
    assert len(np.unique(png.reshape(-1, png.shape[2]), axis=0)) > 5
    assert pixels_of(png, _PLAN_COLOURS[0]) > 0.1 * png.shape[0] * png.shape[1]
    assert pixels_of(png, _PLAN_COLOURS[1]) < 1000  # one province: the legend's swatch only


def test_plan_map_highlights_a_border(tmp_path):
    png = mpimg.imread(plan_map(make_plan("湖北,湖南", COARSE), tmp_path / "two.png"))
    assert pixels_of(png, _PLAN_COLOURS[1]) > 5000  # 60 border chunks of ~15×15 px


def test_map_into_a_missing_folder_is_a_clear_error(tmp_path, hubei):
    with pytest.raises(InputError, match=r"folder .*nowhere does not exist"):
        plan_map(hubei, tmp_path / "nowhere" / "m.png")
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="--map"):
        plan_map(hubei, tmp_path / "file" / "m.png")


@pytest.fixture
def run_dir(tmp_path, hubei):
    rundir = RunDir(tmp_path / "run").create()
    rundir.freeze(RunConfig(COARSE, region="湖北"), frozenset())
    chunks = hubei.chunks()
    with StateStore(rundir.state) as state:
        state.add_chunks(chunks)
        state.record([ChunkResult(c, ok=True) for c, _ in chunks[:40]]
                     + [ChunkResult(c, ok=False, error="boom") for c, _ in chunks[40:45]])
        state.mark_no_imagery([c for c, _ in chunks[45:60]])
        assert state.count() == {DONE: 40, FAILED: 5, NO_IMAGERY: 15, PENDING: len(chunks) - 60}
    return rundir.root


def test_status_map_colours_states(tmp_path, run_dir):
    png = mpimg.imread(status_map(run_dir, tmp_path / "status.png"))
    done, failed, pending, none = (pixels_of(png, _STATUS_COLOURS[s]) for s in (DONE, FAILED, PENDING,
                                                                             NO_IMAGERY))
    assert pending > done > none > failed > 0


def test_status_map_without_chunks(tmp_path):
    rundir = RunDir(tmp_path / "run").create()
    rundir.freeze(RunConfig(COARSE, region="湖北"), frozenset())
    with pytest.raises(InputError, match="no planned chunks"):
        status_map(rundir.root, tmp_path / "m.png")
    assert not rundir.state.exists()  # a map reads; it creates nothing


def test_cli_plan_map(tmp_path):
    out = tmp_path / "out.png"
    proc = sinolc("plan", "--region", "420000", "--workflow", "cn", "--map", str(out),
                  "--run-dir", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert f"map: {out}" in proc.stderr
    assert mpimg.imread(out).shape[0] > 400
    assert (tmp_path / "p" / "plan.json").is_file()


def test_cli_plan_map_unwritable(tmp_path):
    proc = sinolc("plan", "--region", "420000", "--workflow", "cn", "--run-dir", str(tmp_path / "p"),
                  "--map", str(tmp_path / "nowhere" / "out.png"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write map")
    assert "does not exist" in lines[0] and "--map" in lines[0]
    assert not (tmp_path / "p").exists()  # nothing recorded when the map cannot be written


def test_cli_status_map_keeps_json(tmp_path, run_dir):
    from sinolc_dist.cli import cli  # in-process: a third subprocess would double the time

    out = tmp_path / "status.png"
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(run_dir), "--json", "--map", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"][FAILED] == 5
    assert f"map: {out}" in result.stderr
    assert out.is_file()
