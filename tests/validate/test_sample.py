"""sample: reproducible draws from done chunks, the strata and their allocation, the files written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import FAILED, NO_IMAGERY, PENDING, UNPLANNED, FakeRun

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import ChunkId
from sinolc_dist.validate.points import validate_points
from sinolc_dist.validate.runmap import RunMap
from sinolc_dist.validate.sample import MIN_PER_STRATUM, allocate, draw_sample, write_sample

NOT_DONE = {PENDING, FAILED, NO_IMAGERY, UNPLANNED}


def points_of(sample) -> set[tuple[int, int]]:
    return set(zip(sample.rows.tolist(), sample.cols.tolist(), strict=True))


def test_the_same_seed_draws_the_same_distinct_classified_pixels_of_done_chunks(fake_run: FakeRun):
    rm = RunMap.open(fake_run.rundir)
    first, again, other = (draw_sample(rm, 400, "none", seed) for seed in (7, 7, 8))
    assert points_of(first) == points_of(again) and points_of(first) != points_of(other)
    assert len(points_of(first)) == 400 and first.drawn.tolist() == [400]
    assert not {ChunkId(r // 64, c // 64) for r, c in points_of(first)} & NOT_DONE
    assert (fake_run.classes[first.rows, first.cols] != 0).all()
    assert first.population.tolist() == [12 * 64 * 64 - 4]


def test_class_strata_draw_each_class_from_its_own_pixels(fake_run: FakeRun):
    rm = RunMap.open(fake_run.rundir)
    sample = draw_sample(rm, 300, "class", 3)
    mapped = fake_run.classes[sample.rows, sample.cols]
    codes = np.array(rm.legend.codes)
    assert (mapped == codes[sample.stratum]).all()
    assert sample.drawn.sum() == 300 and (sample.drawn[:5] >= MIN_PER_STRATUM).all()
    assert sample.drawn[5:].sum() == 0 and sample.population[5:].sum() == 0  # classes 6.. are absent


def test_province_strata_keep_pixels_inside_their_province(fake_run: FakeRun):
    rm = RunMap.open(fake_run.rundir)
    sample = draw_sample(rm, 50, "province", 0)
    assert sample.strata == ("Hubei",) and sample.drawn.tolist() == [50]
    assert set(rm.province_of(sample.rows, sample.cols)) == {"420000"}


def test_allocation_gives_every_stratum_its_floor_then_shares_by_size():
    alloc = allocate(1000, np.array([1_000_000, 10_000, 30, 0]))
    assert alloc.sum() == 1000 and alloc[2] == 30 and alloc[3] == 0
    assert alloc[1] >= MIN_PER_STRATUM and alloc[0] > 800
    assert allocate(10, np.array([3, 4])).tolist() == [3, 4]  # more asked than there are pixels
    assert allocate(7, np.array([100, 100, 100])).sum() == 7


def test_bad_requests_are_refused(fake_run: FakeRun, tmp_path):
    rm = RunMap.open(fake_run.rundir)
    with pytest.raises(ConfigError, match="--strata 'tiles' is not one of none, class, province"):
        draw_sample(rm, 10, "tiles")
    with pytest.raises(ConfigError, match="--n 0: give a positive number"):
        draw_sample(rm, 0)
    with pytest.raises(ConfigError, match=r"give a \.gpkg or \.csv name"):
        write_sample(tmp_path / "s.shp", draw_sample(rm, 5), rm)
    empty = RunMap(rm.rundir, rm.config, rm.classes, np.zeros_like(rm.status), rm.adcodes)
    with pytest.raises(InputError, match="no classified pixels in done chunks"):
        draw_sample(empty, 10)


@pytest.mark.parametrize("suffix", [".csv", ".gpkg"])
def test_a_written_sample_labelled_from_the_truth_validates_perfectly(fake_run: FakeRun, tmp_path, suffix):
    rm = RunMap.open(fake_run.rundir)
    sample = draw_sample(rm, 200, "class", 5)
    path, design = write_sample(tmp_path / f"sample{suffix}", sample, rm)
    assert json.loads(design.read_text())["n"] == 200
    unlabelled = validate_points(fake_run.rundir, path)
    assert unlabelled.counts()["no label"] == 200 and unlabelled.national.n == 0
    if suffix == ".csv":
        rows = list(csv.DictReader(path.open()))
        assert [r["label"] for r in rows] == [""] * 200
        assert set(rows[0]) == {"id", "lon", "lat", "x", "y", "label"}
        truth = fake_run.classes[sample.rows, sample.cols]
        labelled = tmp_path / "labelled.csv"
        with labelled.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({**r, "label": int(t)} for r, t in zip(rows, truth, strict=True))
        result = validate_points(fake_run.rundir, labelled, strata="class")
        assert result.national.n == 200 and result.national.oa == 1.0 and result.stratified.oa == 1.0
