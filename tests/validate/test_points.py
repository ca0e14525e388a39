"""validate --points over a real run directory: figures, exclusions, formats, CRSs, strata, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import FAILED, NO_IMAGERY, PENDING, UNPLANNED, FakeRun, make_run

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import CHINA_ALBERS, ChunkId
from sinolc_dist.legend import SINOLC, Legend
from sinolc_dist.validate import gpkg
from sinolc_dist.validate.metrics import accuracy, confusion
from sinolc_dist.validate.points import validate_points, write_points_results
from sinolc_dist.validate.runmap import validation_folder

CODES = SINOLC.codes


def reference_points(run: FakeRun) -> dict:
    """Points every 16 px, labelled with the truth except every 5th (wrong); the expected outcome."""
    rows, cols = (a.ravel() for a in np.meshgrid(np.arange(5, 256, 16), np.arange(5, 256, 16), indexing="ij"))
    rows, cols = np.append(rows, 64), np.append(cols, 65)  # on the nodata pixels of c/1/1
    truth = run.classes[rows, cols]
    labels = truth.copy()
    labels[::5] = labels[::5] % 5 + 1
    labels[truth == 0] = 3
    chunk = [ChunkId(int(r) // 64, int(c) // 64) for r, c in zip(rows, cols, strict=True)]
    reason = np.array([{PENDING: "chunk not done", FAILED: "chunk not done", NO_IMAGERY: "no imagery",
                        UNPLANNED: "outside the run"}.get(c, "") for c in chunk], dtype=object)
    reason[(reason == "") & (truth == 0)] = "nodata"
    used = reason == ""
    expected = accuracy(confusion(truth[used], labels[used], CODES), CODES)
    return {"rows": rows, "cols": cols, "labels": labels, "reason": reason, "expected": expected}


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def lonlat_csv(run: FakeRun, pts: dict, path: Path, extra: list[list] = ()) -> Path:
    lon, lat = run.pixel_lonlat(pts["rows"], pts["cols"])
    # Half the labels by class name, half by code.
    labels = [SINOLC.name_of(int(v)) if i % 2 else int(v) for i, v in enumerate(pts["labels"])]
    rows = [[i, x, y, lab] for i, (x, y, lab) in enumerate(zip(lon, lat, labels, strict=True))]
    return write_csv(path, ["id", "lon", "lat", "class"], rows + list(extra))


def test_points_give_the_hand_counted_figures_and_every_exclusion_is_counted(fake_run, tmp_path):
    pts = reference_points(fake_run)
    extra = [["blank", 113.70, 30.95, ""], ["lava", 113.70, 30.95, "Lava"], ["nan", "", "", 3],
             ["far", 100.0, 40.0, 2]]
    result = validate_points(fake_run.rundir, lonlat_csv(fake_run, pts, tmp_path / "p.csv", extra))
    exp = pts["expected"]
    assert result.national.matrix.tolist() == exp.matrix.tolist()
    assert result.national.oa == pytest.approx(exp.oa) and result.national.kappa == pytest.approx(exp.kappa)
    counts = result.counts()
    assert counts["points"] == len(pts["rows"]) + 4 and counts["used"] == int(exp.n)
    for why in ("chunk not done", "no imagery", "outside the run", "nodata"):
        assert counts[why] == int((pts["reason"] == why).sum()) + (why == "outside the run"), why
    assert counts["no label"] == 1 and counts["unknown class"] == 1 and counts["bad coordinates"] == 1
    assert counts["nodata"] == 1 and counts["no imagery"] == 16 and counts["chunk not done"] == 32
    listed = {e.id: e.reason for e in result.excluded}
    assert listed["lava"] == "unknown class" and listed["far"] == "outside the run"
    assert sum(counts[k] for k in counts if k not in ("points", "used")) + counts["used"] == counts["points"]
    assert set(result.scopes) == {"national", "420000"}
    assert result.scopes["420000"].matrix.tolist() == exp.matrix.tolist()
    assert result.stratified is None


def test_a_geojson_in_the_grid_crs_and_a_geopackage_give_the_same_figures(fake_run, tmp_path):
    pts = reference_points(fake_run)
    x, y = fake_run.pixel_xy(pts["rows"], pts["cols"])
    feats = [{"type": "Feature", "id": i, "geometry": {"type": "Point", "coordinates": [xi, yi]},
              "properties": {"label": int(v)}}
             for i, (xi, yi, v) in enumerate(zip(x, y, pts["labels"], strict=True))]
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": CHINA_ALBERS}}, "features": feats}))
    by_geojson = validate_points(fake_run.rundir, path)
    lon, lat = fake_run.pixel_lonlat(pts["rows"], pts["cols"])
    gp = tmp_path / "p.gpkg"
    gpkg.write_points(gp, lon, lat, {"id": list(range(len(lon))), "label": [str(v) for v in pts["labels"]]})
    by_gpkg = validate_points(fake_run.rundir, gp)
    for result in (by_geojson, by_gpkg):
        assert result.national.matrix.tolist() == pts["expected"].matrix.tolist()


def test_projected_csv_points_need_their_crs(fake_run, tmp_path):
    pts = reference_points(fake_run)
    x, y = fake_run.pixel_xy(pts["rows"], pts["cols"])
    path = write_csv(tmp_path / "xy.csv", ["x", "y", "code"],
                     [[a, b, int(v)] for a, b, v in zip(x, y, pts["labels"], strict=True)])
    with pytest.raises(InputError, match="x/y columns but no CRS: give it with --crs"):
        validate_points(fake_run.rundir, path, class_column="code")
    with pytest.raises(InputError, match="CRS 'EPSG:999999' is unknown to PROJ"):
        validate_points(fake_run.rundir, path, crs="EPSG:999999", class_column="code")
    result = validate_points(fake_run.rundir, path, crs="china-albers", class_column="code")
    assert result.national.matrix.tolist() == pts["expected"].matrix.tolist()


def test_a_class_map_translates_another_legend(fake_run, tmp_path):
    pts = reference_points(fake_run)
    lon, lat = fake_run.pixel_lonlat(pts["rows"], pts["cols"])
    theirs = {1: "road", 2: "forest", 3: "shrub", 4: "grass", 5: "crop"}
    path = write_csv(tmp_path / "p.csv", ["lon", "lat", "label"],
                     [[a, b, theirs[int(v)]] for a, b, v in zip(lon, lat, pts["labels"], strict=True)])
    cmap = tmp_path / "map.yaml"
    cmap.write_text("road: 1\nforest: Tree cover\nshrub: 3\ngrass: grassland\n")  # crop left unmapped
    result = validate_points(fake_run.rundir, path, class_map=cmap)
    crops = sum(1 for v, r in zip(pts["labels"], pts["reason"], strict=True) if v == 5 and r == "")
    assert result.counts()["unknown class"] >= crops > 0
    assert result.national.n == pts["expected"].n - crops
    cmap.write_text("road: Lava\n")
    with pytest.raises(ConfigError, match="maps 'road' to 'Lava', not a class of the run's legend"):
        validate_points(fake_run.rundir, path, class_map=cmap)


def test_bad_files_are_refused_with_the_fix(fake_run, tmp_path):
    rd = fake_run.rundir
    with pytest.raises(InputError, match=r"has no 'class' or 'label' column .* --class-column"):
        validate_points(rd, write_csv(tmp_path / "a.csv", ["lon", "lat", "kind"], [[113.7, 30.95, 1]]))
    with pytest.raises(InputError, match="holds no points"):
        validate_points(rd, write_csv(tmp_path / "b.csv", ["lon", "lat", "class"], []))
    with pytest.raises(InputError, match="has no lon/lat or x/y columns"):
        validate_points(rd, write_csv(tmp_path / "c.csv", ["a", "b", "class"], [[1, 2, 3]]))
    with pytest.raises(InputError, match="not found"):
        validate_points(rd, tmp_path / "missing.csv")
    (tmp_path / "d.shp").write_text("")
    with pytest.raises(InputError, match=r"unsupported format '\.shp'"):
        validate_points(rd, tmp_path / "d.shp")
    (tmp_path / "e.geojson").write_text("{not json")
    with pytest.raises(InputError, match="is not valid GeoJSON"):
        validate_points(rd, tmp_path / "e.geojson")
    with pytest.raises(ConfigError, match="--strata 'province' is not one of none, class"):
        validate_points(rd, tmp_path / "e.geojson", strata="province")


def test_class_strata_add_the_area_weighted_estimate_and_results_are_written(fake_run, tmp_path):
    pts = reference_points(fake_run)
    result = validate_points(fake_run.rundir, lonlat_csv(fake_run, pts, tmp_path / "p.csv"), strata="class")
    est = result.stratified
    assert est is not None and 0 < est.oa <= 1
    done_px = 12 * 64 * 64 - 4  # 12 done chunks of 2 m pixels, 4 of them nodata
    assert est.area.sum() == pytest.approx(done_px * 4 / 1e6)
    folder = validation_folder(fake_run.rundir) / "points"
    paths = write_points_results(folder, result, SINOLC)
    assert {p.name for p in paths} == {"accuracy.csv", "classes.csv", "confusion.csv", "confusion.png",
                                       "excluded.csv", "stratified.csv", "report.json"}
    doc = json.loads((folder / "report.json").read_text())
    assert doc["counts"]["used"] == int(pts["expected"].n)
    assert doc["scopes"]["420000"]["name"] == "Hubei"
    assert doc["stratified"]["classes"][0]["area"] == pytest.approx(est.area[0])
    assert matplotlib.image.imread(folder / "confusion.png").shape[1] > 100
    rows = list(csv.DictReader((folder / "excluded.csv").open()))
    assert len(rows) == len(result.excluded) and {r["reason"] for r in rows} >= {"no imagery", "nodata"}


def test_a_reference_class_the_model_never_writes_is_kept_and_named(tmp_path):
    # The model's channels write codes 1..5 only: water (9) at a point is an error of the map, kept.
    five = Legend(SINOLC.name, SINOLC.entries, channels=(1, 2, 3, 4, 5))
    run = make_run(tmp_path / "run", legend=five)
    lon, lat = run.pixel_lonlat(np.array([100, 120]), np.array([100, 120]))
    path = write_csv(tmp_path / "p.csv", ["lon", "lat", "class"],
                     [[lon[0], lat[0], "Water"], [lon[1], lat[1], 2]])
    result = validate_points(run.rundir, path)
    assert result.national.n == 2 and result.unproducible == (9,)
