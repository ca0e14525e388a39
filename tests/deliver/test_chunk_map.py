"""``status/chunks.tif``: one pixel per chunk on the grid, read back with GDAL, rasterio, `status --json`."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import small_grid

from sinolc_dist.cli import cli
from sinolc_dist.deliver.chunk_map import (
    STATE_CODES,
    STATE_COLOURS,
    ChunkLattice,
    chunk_map_path,
    status_maps,
    write_chunk_map,
)
from sinolc_dist.errors import InputError, RunDirError
from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, ChunkResult, StateStore

GRID = small_grid()
#: Chunks of two rows and three columns away from the grid's corner, in two provinces.
CHUNKS = [ChunkId(r, c) for r in (1, 2) for c in (1, 2, 3)]


def _run_dir(tmp_path) -> RunDir:
    """A run directory with its grid and a state: 2 done (one after 3 attempts), 1 failed, 1 no-imagery."""
    rundir = RunDir(tmp_path / "run").create()
    rundir.config.write_text(json.dumps({"grid": GRID.to_dict()}))
    with StateStore(rundir.state) as state:
        state.add_chunks((c, ("420000",) if c.col < 3 else ("420000", "430000")) for c in CHUNKS)
        state.record([ChunkResult(CHUNKS[0], True, "w", 0.0, 2.2, "x"),
                      ChunkResult(CHUNKS[1], True, "w", 0.0, 0.4, "x", attempts=3),
                      ChunkResult(CHUNKS[2], False, "w", 0.0, 1.0, error="OSError: boom")])
        state.mark_no_imagery([CHUNKS[5]])
    return rundir


def _bands(path) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(path) as src:
        return src.read(), src.transform


def test_chunk_map_opens_with_gdalinfo_lies_on_the_grid_and_holds_the_state(tmp_path):
    rundir = _run_dir(tmp_path)
    path = write_chunk_map(ChunkLattice.from_state(rundir.state, GRID), tmp_path / "chunks.tif")
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(path)], check=True, capture_output=True,
                                     text=True).stdout)
    assert info["size"] == [3, 2] and [b["type"] for b in info["bands"]] == ["UInt16"] * 3
    assert [b["description"].split(" (")[0] for b in info["bands"]] == ["state", "seconds per chunk",
                                                                          "attempts"]
    assert all(b["noDataValue"] == 0 for b in info["bands"])
    table = {i: e[:3] for i, e in enumerate(info["bands"][0]["colorTable"]["entries"])}
    assert table[STATE_CODES[FAILED]] == [214, 39, 40] and table[STATE_CODES[DONE]] == [92, 184, 92]
    bands, transform = _bands(path)
    for i, j in np.ndindex(2, 3):  # each pixel's corner is its chunk's corner, on the grid
        cid = ChunkId(1 + i, 1 + j)
        left, _, _, top = GRID.chunk_bounds(cid)
        assert transform @ (j, i) == pytest.approx((left, top))
    assert transform.a == GRID.chunk * GRID.resolution == -transform.e
    assert bands[0].tolist() == [[STATE_CODES[s] for s in (DONE, DONE, FAILED)],
                                 [STATE_CODES[s] for s in (PENDING, PENDING, NO_IMAGERY)]]
    assert bands[1, 0].tolist() == [3, 1, 1] and bands[1, 1].tolist() == [0, 0, 0]  # whole seconds, up
    assert bands[2, 0].tolist() == [1, 3, 1]


def test_the_rename_leaves_an_open_reader_on_the_old_file(tmp_path):
    rundir = _run_dir(tmp_path)
    path = tmp_path / "chunks.tif"
    lattice = ChunkLattice.from_state(rundir.state, GRID)
    write_chunk_map(lattice, path)
    with rasterio.open(path) as held:  # QGIS holding the file
        lattice.state[1, 0] = STATE_CODES[DONE]
        write_chunk_map(lattice, path)
        assert held.read(1)[1, 0] == STATE_CODES[PENDING]
        assert _bands(path)[0][0, 1, 0] == STATE_CODES[DONE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.tif", "chunks.tif.aux.xml", "run"]


def test_status_maps_writes_the_asked_map_and_refreshes_status_chunks_tif_without_a_driver(tmp_path):
    rundir = _run_dir(tmp_path)
    tif, png = tmp_path / "m.tif", tmp_path / "m.png"
    assert status_maps(rundir.root, tif, driver_alive=True) == [tif]
    assert not chunk_map_path(rundir).exists()  # a live driver keeps its own up to date
    assert status_maps(rundir.root, png, driver_alive=False) == [png, chunk_map_path(rundir)]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert np.array_equal(_bands(tif)[0], _bands(chunk_map_path(rundir))[0])


def test_cli_status_map_tif_matches_status_json(tmp_path):
    rundir = _run_dir(tmp_path)
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(rundir.root), "--json", "--map",
                                      str(tmp_path / "m.tif")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    states = _bands(tmp_path / "m.tif")[0][0]
    assert {s: int((states == STATE_CODES[s]).sum()) for s in report["total"]} == report["total"]
    assert "map: " in result.stderr and "status/chunks.tif" in result.stderr


def test_colours_differ_and_every_state_has_a_code():
    assert set(STATE_CODES) == set(STATE_COLOURS) and len(set(STATE_COLOURS.values())) == len(STATE_COLOURS)
    assert sorted(STATE_CODES.values()) == list(range(1, len(STATE_CODES) + 1))


def test_bad_inputs_are_one_line_errors(tmp_path):
    rundir = _run_dir(tmp_path)
    lattice = ChunkLattice.from_state(rundir.state, GRID)
    with pytest.raises(InputError, match=r"folder .* does not exist; create it"):
        write_chunk_map(lattice, tmp_path / "missing" / "chunks.tif")
    with StateStore(tmp_path / "empty.sqlite"):
        pass
    with pytest.raises(InputError, match="no planned chunks to map: plan the run first"):
        ChunkLattice.from_state(tmp_path / "empty.sqlite", GRID)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(RunDirError, match=r"cannot read the state .*junk\.sqlite"):
        ChunkLattice.from_state(tmp_path / "junk.sqlite", GRID)
    bare = RunDir(tmp_path / "bare").create()
    bare.config.write_text(json.dumps({"grid": GRID.to_dict()}))
    with pytest.raises(InputError, match="no planned chunks to draw"):
        status_maps(bare.root, tmp_path / "m.tif", driver_alive=False)
    assert not bare.state.exists()


def test_seconds_saturate_and_the_lattice_counts():
    lattice = ChunkLattice(GRID, 0, 0, np.array([[3, 0]], np.uint8), np.array([[1e6, 0]], np.float32),
                           np.array([[1, 0]], np.uint16))
    assert lattice.counts()[DONE] == 1 and sum(lattice.counts().values()) == 1
    assert lattice.index(ChunkId(0, 1)) == (0, 1) and lattice.index(ChunkId(1, 0)) is None
    assert math.isclose(lattice.transform.c, GRID.origin[0])
