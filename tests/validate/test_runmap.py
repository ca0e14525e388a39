"""A run as a map: chunk status of pixels, provinces of pixels, mapped class areas."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeRun, make_run

from sinolc_dist.errors import InputError, RunDirError
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.validate.runmap import OUTSIDE, STATUS_CODE, RunMap


def test_pixels_get_their_chunk_status_and_province(fake_run: FakeRun):
    rm = RunMap.open(fake_run.rundir)
    rows, cols = np.array([0, 0, 0, 100, 255, -1, 999]), np.array([0, 70, 130, 100, 255, 3, 3])
    assert rm.chunk_status(rows, cols).tolist() == [
        STATUS_CODE["pending"], STATUS_CODE["failed"], STATUS_CODE["no-imagery"], STATUS_CODE["done"],
        OUTSIDE, OUTSIDE, OUTSIDE]
    assert rm.province_of(rows[:4], cols[:4]).tolist() == ["420000"] * 4
    assert [p.name_en for p in rm.provinces] == ["Hubei"] and len(rm.done_chunks) == 12
    assert rm.read_pixels(rows[:4], cols[:4]).tolist() == fake_run.classes[rows[:4], cols[:4]].tolist()


def test_mapped_areas_are_the_done_chunks_classes_in_km2(tmp_path):
    run = make_run(tmp_path / "run")
    km2 = RunMap.open(run.rundir).mapped_km2()
    done = np.zeros(run.classes.shape, bool)
    done[64:, :] = done[:64, 192:] = True  # c/0/0-2 are not done
    done[192:, 192:] = False  # c/3/3 is not planned
    for code in range(1, 6):
        assert km2[code] == pytest.approx(((run.classes == code) & done).sum() * 4 / 1e6)


def test_a_folder_without_state_is_refused(tmp_path, fake_run: FakeRun):
    fake_run.rundir.state.unlink()
    with pytest.raises(InputError, match=r"has no state\.sqlite: run `sinolc-dist run` first"):
        RunMap.open(fake_run.rundir)
    with pytest.raises(RunDirError, match="is not a run directory"):
        RunMap.open(RunDir(tmp_path / "nothing"))
