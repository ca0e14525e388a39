"""validate --stats: our statistics against official km² per province and class."""

from __future__ import annotations

import csv
import json

import pytest

from sinolc_dist.deliver.stats import ProvinceAreas, write_tables
from sinolc_dist.errors import InputError
from sinolc_dist.legend import SINOLC
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.validate.official import compare_stats, write_stats_results

OURS = {"420000": {2: 100.0, 5: 50.0, 9: 10.0}, "430000": {2: 200.0, 5: 20.0}}


@pytest.fixture
def run_with_stats(tmp_path) -> RunDir:
    rundir = RunDir(tmp_path / "run").create()
    rows = [ProvinceAreas("420000", "Hubei", "湖北省", True, "a.tif", OURS["420000"]),
            ProvinceAreas("430000", "Hunan", "湖南省", True, "b.tif", OURS["430000"])]
    write_tables(rundir.stats, rows, {"run": "test"}, SINOLC)
    return rundir


def write(path, rows):
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_long_official_table_gives_the_hand_computed_rates(run_with_stats, tmp_path):
    path = write(tmp_path / "official.csv", [
        ["province", "class", "km2"], ["湖北省", "Tree cover", 90], ["Hubei", 5, 60],
        ["430000", "tree cover", 250], ["Hunan", "Cropland", 20], ["Hunan", "Lava", 3], ["Beijing", 2, 5]])
    result = compare_stats(run_with_stats, path, SINOLC)
    # Hubei: |100-90| + |50-60| over 150; Hunan: |200-250| + 0 over 270; water (9) is not in the table.
    assert result.rate("420000") == pytest.approx(20 / 150)
    assert result.rate("430000") == pytest.approx(50 / 270)
    assert result.overall == pytest.approx(70 / 420)
    assert result.class_errors()[2] == pytest.approx((340, 300, -40 / 340))
    assert result.unknown == ("Lava",) and result.missing_ours == ("110000",)
    paths = write_stats_results(tmp_path / "out", result, SINOLC)
    rows = list(csv.DictReader(paths[0].open()))
    assert rows[-1]["province"] == "overall"
    assert float(rows[-1]["misestimation"]) == pytest.approx(70 / 420, abs=1e-6)
    doc = json.loads(paths[2].read_text())
    assert doc["provinces"]["420000"]["name"] == "Hubei" and doc["unknown_classes"] == ["Lava"]


def test_a_wide_table_and_a_class_map(run_with_stats, tmp_path):
    path = write(tmp_path / "wide.csv", [["province", "forest", "farmland", "orchard"],
                                         ["Hubei", 90, 40, 20], ["Hunan", 250, 20, ""]])
    cmap = tmp_path / "map.yaml"
    cmap.write_text("forest: 2\nfarmland: Cropland\norchard: 5\n")  # orchards count as cropland
    result = compare_stats(run_with_stats, path, SINOLC, cmap)
    assert result.official["420000"] == {2: 90.0, 5: 60.0}
    assert result.overall == pytest.approx(70 / 420)


def test_bad_inputs_are_refused(run_with_stats, tmp_path):
    with pytest.raises(InputError, match="no 'province' column"):
        compare_stats(run_with_stats, write(tmp_path / "a.csv", [["region", "class", "km2"], ["x", 1, 2]]),
                      SINOLC)
    with pytest.raises(InputError, match="'Atlantis' is not a province"):
        compare_stats(run_with_stats, write(tmp_path / "b.csv", [["province", "class", "km2"],
                                                                 ["Atlantis", 2, 1]]), SINOLC)
    with pytest.raises(InputError, match="no class names a class of the run's legend"):
        compare_stats(run_with_stats, write(tmp_path / "c.csv", [["province", "class", "km2"],
                                                                 ["Hubei", "forest", 1]]), SINOLC)
    with pytest.raises(InputError, match="name none of the run's provinces"):
        compare_stats(run_with_stats, write(tmp_path / "d.csv", [["province", "class", "km2"],
                                                                 ["Beijing", 2, 1]]), SINOLC)
    with pytest.raises(InputError, match="has no rows"):
        compare_stats(run_with_stats, write(tmp_path / "e.csv", [["province", "class", "km2"]]), SINOLC)
    with pytest.raises(InputError, match="is not a number"):
        compare_stats(run_with_stats, write(tmp_path / "f.csv", [["province", "class", "km2"],
                                                                 ["Hubei", 2, "lots"]]), SINOLC)
    with pytest.raises(InputError, match=r"classes_km2\.json not found: run `sinolc-dist mosaic`"):
        compare_stats(RunDir(tmp_path / "nothing"), tmp_path / "f.csv", SINOLC)
