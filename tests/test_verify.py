"""A resume never trusts the state blindly: lost or changed output is recomputed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_output

from sinolc_dist import pipeline, stores
from sinolc_dist.grid import Grid
from sinolc_dist.state import DONE, StateStore
from sinolc_dist.verify import present_shards, stale_chunks


@pytest.mark.slow
def test_lost_and_changed_shards_are_recomputed(small_run):
    rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
    pipeline.run(pipeline.RunRequest(**{**req.__dict__, "mosaic": False}))
    reference = run_output(rundir, scene.window)
    grid = Grid.from_dict(rundir.read_config()["grid"])
    shards = sorted(present_shards(rundir.output))
    assert len(shards) == 6  # 3×4 chunks one chunk off the shard lattice: 2×3 shards
    # Lose one shard file, and overwrite another shard with other (valid) classes.
    lost, changed = shards[0], shards[-1]
    (rundir.output / "classes" / "c" / str(lost.row) / str(lost.col)).unlink()
    w = grid.shard_window(changed)
    stores.write_window(stores.open_array(rundir.output, grid), w, np.full((w.height, w.width), 3, np.uint8))
    with StateStore(rundir.state) as state:
        stale = stale_chunks(state, grid, rundir.output, seed=0)
    expected = {c for c in stale if grid.shard_of(c) in (lost, changed)}
    assert stale and set(stale) == expected
    summary = pipeline.run(pipeline.RunRequest(**{**req.__dict__, "mosaic": False}))
    assert summary.report.done == len(stale)
    assert any("missing or different output" in n for n in summary.notes)
    assert np.array_equal(run_output(rundir, scene.window), reference)
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] == 12
        assert stale_chunks(state, grid, rundir.output) == []
