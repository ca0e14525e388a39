"""``repair``: strips removed, the rest shifted inward, everything else of the file kept."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate
from synthetic import duplicate, land_cover, write_map

from sinolc_dist.audit.repair import REPAIRED_TAG, parse_strip, repair
from sinolc_dist.audit.strips import Strip
from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.legend import SINOLC


def rat_rows(path: Path) -> list[list[str]]:
    table = ET.parse(f"{path}.aux.xml").getroot().find("PAMRasterBand/GDALRasterAttributeTable")
    assert table is not None
    return [[f.text or "" for f in row.findall("F")] for row in table.findall("Row")]


@pytest.fixture(scope="module")
def original() -> np.ndarray:
    return land_cover(1000, 1200, 4)


@pytest.mark.parametrize("changed", [0.0, 0.03])
def test_repair_gives_back_the_map_before_the_strips_were_added(tmp_path, original, changed):
    image = duplicate(duplicate(original, 1, 800, 350, changed), 0, 400, 268, changed, seed=2)
    write_map(tmp_path / "m.tif", image, rat=True)
    report = repair(tmp_path / "m.tif", tmp_path / "fixed.tif")
    assert report is not None
    assert [(s.axis, s.start, s.width) for s in report.removed] == [("columns", 800, 350), ("rows", 400, 268)]
    with rasterio.open(tmp_path / "fixed.tif") as dst, rasterio.open(tmp_path / "m.tif") as src:
        assert np.array_equal(dst.read(1), original)  # the copy goes, the ground it repeated stays
        assert dst.crs == src.crs and dst.transform == src.transform  # top-left origin and pixel size
        assert dst.nodata == 0 and dst.dtypes[0] == "uint8"
        assert dst.colormap(1)[9] == SINOLC.colormap()[9]
        assert dst.descriptions == ("land-cover class",)
        assert dst.tags()["PROVINCE"] == "Hubei" and dst.tags(1)["CLASS_9"] == "Water"
        assert json.loads(dst.tags()[REPAIRED_TAG]) == [{"axis": "columns", "start": 800, "end": 1150},
                                                        {"axis": "rows", "start": 400, "end": 668}]
        assert dst.overviews(1)
    assert cog_validate(tmp_path / "fixed.tif", quiet=True)[0]
    assert rat_rows(tmp_path / "fixed.tif") == [["1", "Traffic route"], ["9", "Water"]]  # RAT in .aux.xml
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.tif", "fixed.tif.aux.xml", "m.tif",
                                                           "m.tif.aux.xml"]


def test_strips_given_by_hand_as_in_the_authors_tool_and_a_tiled_geotiff(tmp_path, original):
    image = duplicate(original, 1, 900, 200).astype(np.uint16)
    write_map(tmp_path / "m.tif", image)
    report = repair(tmp_path / "m.tif", tmp_path / "out" / "fixed.tif", [parse_strip("columns:900:1100")],
                    fmt="gtiff")
    assert report is not None and (report.width, report.height) == (1200, 1000)
    with rasterio.open(tmp_path / "out" / "fixed.tif") as dst:
        assert np.array_equal(dst.read(1), original) and dst.dtypes[0] == "uint16"
        assert dst.block_shapes == [(512, 512)] and dst.overviews(1) == []
    assert not (tmp_path / "out" / "fixed.tif.aux.xml").exists()


def test_repair_in_place_replaces_the_file(tmp_path, original):
    write_map(tmp_path / "m.tif", duplicate(original, 0, 500, 64))
    assert repair(tmp_path / "m.tif", tmp_path / "m.tif") is not None
    with rasterio.open(tmp_path / "m.tif") as dst:
        assert np.array_equal(dst.read(1), original)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]


def test_a_clean_file_needs_no_repair(tmp_path, original):
    write_map(tmp_path / "m.tif", original)
    assert repair(tmp_path / "m.tif", tmp_path / "fixed.tif") is None
    assert not (tmp_path / "fixed.tif").exists()


def test_strip_syntax():
    assert parse_strip("cols:43455:48046") == Strip("columns", 43455, 4591)
    assert parse_strip("rows:39479:42164").end == 42164
    for bad in ("columns:5", "diagonal:1:2", "rows:9:3", "rows:a:b"):
        with pytest.raises(ConfigError, match="columns:START:END or rows:START:END"):
            parse_strip(bad)


def test_a_strip_outside_the_file_or_overlapping_another_is_refused(tmp_path, original):
    write_map(tmp_path / "m.tif", original)
    with pytest.raises(ConfigError, match=r"columns:1100:1300 lies outside .*m.tif, which has 1200 col"):
        repair(tmp_path / "m.tif", tmp_path / "f.tif", [parse_strip("columns:1100:1300")])
    with pytest.raises(ConfigError, match="overlap"):
        repair(tmp_path / "m.tif", tmp_path / "f.tif", [parse_strip("rows:10:50"), parse_strip("rows:40:60")])
    with pytest.raises(ConfigError, match="remove all 1000 rows"):
        repair(tmp_path / "m.tif", tmp_path / "f.tif", [parse_strip("rows:0:1000")])
    with pytest.raises(ConfigError, match="--format 'png'"):
        repair(tmp_path / "m.tif", tmp_path / "f.tif", fmt="png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]


def test_an_output_folder_that_cannot_be_made_is_one_input_error(tmp_path, original):
    write_map(tmp_path / "m.tif", original)
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(InputError, match=r"cannot create the output folder .*taken"):
        repair(tmp_path / "m.tif", tmp_path / "taken" / "f.tif", [parse_strip("rows:0:10")])


@pytest.mark.parametrize("fmt", ["cog", "gtiff"])
def test_a_disk_without_room_for_the_file_is_refused_before_writing(tmpfs, original, fmt):
    from conftest import fill_disk

    write_map(tmpfs / "m.tif", duplicate(original, 1, 600, 100))
    fill_disk(tmpfs, leave=20_000)
    with pytest.raises(InputError, match=r"MiB free but the repaired file needs about .* MiB there"):
        repair(tmpfs / "m.tif", tmpfs / "fixed.tif", [parse_strip("columns:600:700")], fmt=fmt)
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "m.tif"]
