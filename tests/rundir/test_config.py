"""RunConfig: today's run.json reads and writes back unchanged; a run directory written before it resumes."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sinolc_dist.errors import RunDirError
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.legend import CHESAPEAKE, SINOLC
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.integrity import checksum, stale_chunks
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, PENDING, ChunkResult, StateStore
from sinolc_dist.stages.status import status, status_lines

#: A run directory's run.json as written before RunConfig existed (by ``infer._frozen_config``).
BEFORE = Path(__file__).parent / "data" / "run-before-runconfig"
COMPATIBLE = frozenset({"cluster", "retries", "max_in_flight"})


def literal() -> dict:
    return json.loads((BEFORE / "run.json").read_text(encoding="utf-8"))


def test_round_trip_equals_todays_run_json():
    data = literal()
    config = RunConfig.from_dict(data)
    assert config.to_dict() == data
    assert json.dumps(config.to_dict(), indent=2, sort_keys=True) == (BEFORE / "run.json").read_text("utf-8")
    assert config.grid == Grid.from_dict(data["grid"]) and config.legend.class_names() == SINOLC.class_names()
    assert (config.region, config.workflow, config.cluster) == ("湖北", "demo", "local")
    assert (config.retries, config.max_in_flight, config.mosaic_crs, config.zoom) == (1, 4, "grid", None)
    assert config.imagery == ("/data/scenes/a.tif",) and config.boundaries is None
    assert config.model["sha256"] == data["model"]["sha256"] and config.run_id is None


def test_keys_from_older_or_newer_files():
    data = {k: v for k, v in literal().items() if k not in ("legend", "imagery", "zoom", "mosaic_crs")}
    old = RunConfig.from_dict(data)
    assert (old.legend, old.imagery, old.zoom, old.mosaic_crs) == (SINOLC, (), None, None)
    newer = RunConfig.from_dict({**literal(), "run_id": "cn-2024", "future_key": {"a": 1}})
    assert newer.run_id == "cn-2024" and newer.extra == {"future_key": {"a": 1}}
    assert newer.to_dict() == {**literal(), "run_id": "cn-2024", "future_key": {"a": 1}}
    other = replace(newer, legend=CHESAPEAKE, run_id=None, extra={})
    assert RunConfig.from_dict(other.to_dict()) == other and "run_id" not in other.to_dict()


def test_malformed_configurations_are_refused_naming_the_file(tmp_path):
    with pytest.raises(RunDirError, match="no 'grid'"):
        RunConfig.from_dict({"region": "湖北"})
    rundir = RunDir(tmp_path / "run").create()
    rundir.config.write_text(json.dumps({**literal(), "grid": {**literal()["grid"], "chunks": 3}}))
    with pytest.raises(RunDirError, match=r"run\.json is damaged \(.*unknown grid keys \['chunks'\]"):
        rundir.read_config()


def _written_before(tmp_path) -> tuple[RunDir, RunConfig, list[ChunkId]]:
    """The fixture's run.json in a run directory with its output store and a state of 4 done chunks."""
    root = tmp_path / "run"
    shutil.copytree(BEFORE, root)
    rundir = RunDir(root).create()
    grid = Grid.from_dict(literal()["grid"])
    out = stores.create_store(rundir.output, grid, "output")
    classes = np.random.default_rng(5).integers(1, 11, grid.size, dtype=np.uint8)
    stores.write_window(out, grid.full_window, classes)
    chunks = sorted(grid.chunks_in(grid.full_window))
    done = chunks[:4]
    with StateStore(rundir.state) as state:
        state.add_chunks((c, ["420000"]) for c in chunks)
        state.record([ChunkResult(c, True, checksum=checksum(classes[grid.chunk_window(c).slices()]))
                      for c in done])
    return rundir, rundir.read_config(), done


def test_run_directory_written_before_reads_and_resumes(tmp_path):
    rundir, config, done = _written_before(tmp_path)
    report = status(rundir.root)
    assert report.stage == "run" and report.total[DONE] == 4 and report.total[PENDING] == len(
        list(config.grid.chunks_in(config.grid.full_window))) - 4
    assert status_lines(report)
    with StateStore(rundir.state) as state:
        assert stale_chunks(state, config.grid, rundir.output) == []  # a resume's check finds it sound
    resumed = rundir.freeze(replace(config, cluster="slurm.yaml", retries=3), COMPATIBLE)
    assert (resumed.cluster, resumed.retries) == ("slurm.yaml", 3)
    recorded = json.loads(rundir.config.read_text("utf-8"))
    assert recorded == {**literal(), "cluster": "slurm.yaml", "retries": 3}
    with pytest.raises(RunDirError, match="region: '湖北' -> '湖南'"):
        rundir.freeze(replace(config, region="湖南"), COMPATIBLE)
    assert rundir.read_config() == resumed
    grid = resumed.grid  # the checksums the state recorded still describe the store
    out = stores.open_array(rundir.output, grid)
    stores.write_window(out, grid.chunk_window(done[1]), np.zeros((64, 64), np.uint8))
    with StateStore(rundir.state) as state:
        assert stale_chunks(state, grid, rundir.output, sample=len(done)) == [done[1]]


def test_freeze_records_a_new_run(tmp_path):
    rundir = RunDir(tmp_path / "run").create()
    config = RunConfig.from_dict(literal())
    assert rundir.freeze(config, COMPATIBLE) == config
    assert json.loads(rundir.config.read_text()) == literal() and rundir.read_config() == config
