"""Source arguments, the priority rule and the compositing options."""

from __future__ import annotations

import os

import pytest

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.imagery.sources import CompositeOptions, Source, expand, prioritise
from tests.imagery.imagery_factory import standard_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src") / "scenes"
    return standard_scenes(folder)


def test_expand_glob_list_and_tiles(scenes, tmp_path):
    folder = scenes[0].path.parent
    listing = tmp_path / "files.txt"
    listing.write_text(f"# newest last\n{folder / 'd_uint16.tif'}\n\n{folder / 'a_utm49.tif'}\n")
    found = expand([str(listing), str(folder / "*.tif"), str(folder.parent / "tiles")], zoom=17)
    names = [os.path.basename(p) for _, p in found]
    assert names == ["d_uint16.tif", "a_utm49.tif", "b_utm50.tif", "c_lonlat.tif", "tiles"]
    assert found[-1][0] == "xyz" and all(k == "gdal" for k, _ in found[:-1])


def test_expand_errors(scenes, tmp_path):
    with pytest.raises(InputError, match="no imagery matches"):
        expand([str(tmp_path / "*.tif")], None)
    with pytest.raises(InputError, match=r"--zoom Z .*zoom levels found: \[17\]"):
        expand([str(scenes[-1].path)], None)
    with pytest.raises(InputError, match="no zoom level 15"):
        expand([str(scenes[-1].path)], 15)


def _src(name: str, date: str | None, position: int) -> Source:
    return Source(name, "gdal", "", (0, 0, 1, 1), "uint8", (1, 2, 3), date, position)


def test_priority_newest_then_given():
    items = [_src("a", "2019-01-01T00:00:00", 0), _src("b", None, 1), _src("c", "2021-01-01T00:00:00", 2),
             _src("d", "2021-01-01T00:00:00", 3), _src("e", None, 4)]
    assert [s.path for s in prioritise(items, "newest")] == ["c", "d", "a", "b", "e"]
    assert [s.path for s in prioritise(items, "given")] == ["a", "b", "c", "d", "e"]


def test_composite_options_refuse_an_unknown_resampling():
    with pytest.raises(ConfigError, match="resampling"):
        CompositeOptions(resampling="lanczos")
