"""Reading labels: codes, names in any case, a class map, blanks; the class map's own errors."""

from __future__ import annotations

import pytest

from sinolc_dist.errors import ConfigError
from sinolc_dist.legend import SINOLC
from sinolc_dist.validate.pointfile import label_codes, load_class_map, read_point_file


def test_codes_names_and_blanks():
    codes, blank = label_codes([2, "2.0", " tree COVER ", "Lava", "", None, 0, "99"], SINOLC, {})
    assert codes.tolist() == [2, 2, 2, 0, 0, 0, 0, 0]
    assert blank.tolist() == [False, False, False, False, True, True, False, False]


def test_a_class_map_is_tried_first_and_checked_against_the_legend(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("Forest: 2\n11: water\n'2': 5\n")
    cmap = load_class_map(path, SINOLC)
    assert cmap == {"forest": 2, "11": 9, "2": 5}
    assert label_codes(["forest", 11, 2, "Cropland"], SINOLC, cmap)[0].tolist() == [2, 9, 5, 5]
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="must map labels to the run's classes"):
        load_class_map(path, SINOLC)
    with pytest.raises(ConfigError, match="cannot read class map"):
        load_class_map(tmp_path / "none.yaml", SINOLC)


def test_a_csv_with_longitude_latitude_columns_and_a_named_class_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("Longitude,Latitude,LandCover\n113.5,30.5,Water\n113.6,30.6,\n")
    table = read_point_file(path, class_column="landcover")
    assert table.crs == "EPSG:4326" and table.labels == ["Water", ""] and table.ids == ["1", "2"]
    assert table.to_crs("EPSG:4326")[0].tolist() == [113.5, 113.6]
