"""GeoPackage point layers: what we write GDAL reads, and what GDAL writes (any CRS) we read."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import numpy as np
import pytest

from sinolc_dist.errors import InputError
from sinolc_dist.validate import gpkg

LON, LAT = np.array([113.1, 114.25, 112.5]), np.array([30.1, 31.0, 29.75])


def test_points_round_trip_with_their_attributes(tmp_path):
    path = tmp_path / "p.gpkg"
    gpkg.write_points(path, LON, LAT, {"id": [1, 2, 3], "score": [0.5, 1.5, 2.5], "label": ["", "2", ""]})
    x, y, crs, rows = gpkg.read_points(path)
    assert crs == "EPSG:4326" and np.allclose(x, LON) and np.allclose(y, LAT)
    assert [r["id"] for r in rows] == [1, 2, 3] and rows[1]["label"] == "2" and rows[2]["score"] == 2.5
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert con.execute("SELECT min_x, max_y FROM gpkg_contents").fetchone() == (112.5, 31.0)


@pytest.mark.skipif(not shutil.which("ogr2ogr"), reason="GDAL's command-line tools are not installed")
def test_gdal_reads_ours_and_we_read_gdals_in_another_crs(tmp_path):
    ours = tmp_path / "p.gpkg"
    gpkg.write_points(ours, LON, LAT, {"label": ["1", "2", "3"]})
    info = subprocess.run(["ogrinfo", "-al", "-q", str(ours)], capture_output=True, text=True, check=True)
    assert "POINT (114.25 31" in info.stdout and "label (String) = 3" in info.stdout
    utm = tmp_path / "utm.gpkg"
    subprocess.run(["ogr2ogr", "-t_srs", "EPSG:32649", str(utm), str(ours)], check=True, capture_output=True)
    x, _, crs, rows = gpkg.read_points(utm)
    assert crs == "EPSG:32649" and x.min() > 100_000 and [r["label"] for r in rows] == ["1", "2", "3"]


def test_files_that_are_no_point_layers_are_refused(tmp_path):
    junk = tmp_path / "junk.gpkg"
    junk.write_text("not sqlite at all" * 100)
    with pytest.raises(InputError, match="is not a GeoPackage"):
        gpkg.read_points(junk)
    lines = tmp_path / "lines.gpkg"
    gpkg.write_points(lines, LON, LAT, {})
    with sqlite3.connect(lines) as con:
        con.execute("UPDATE gpkg_geometry_columns SET geometry_type_name = 'LINESTRING'")
    with pytest.raises(InputError, match="has no point layer"):
        gpkg.read_points(lines)
