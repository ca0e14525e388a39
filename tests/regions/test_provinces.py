"""The province table and name matching: Chinese, English, pinyin aliases, adcodes, suggestions."""

from __future__ import annotations

import pytest

from sinolc_dist.regions.provinces import PROVINCES, Province, fold_name, province_by_name, suggest


def test_the_34_provinces_have_unique_adcodes_and_names():
    assert len(PROVINCES) == 34
    assert all(a == p.adcode and len(a) == 6 and a.isdigit() and a.endswith("0000")
               for a, p in PROVINCES.items())
    assert len({p.name_zh for p in PROVINCES.values()}) == 34
    assert len({fold_name(p.name_en) for p in PROVINCES.values()}) == 34
    assert str(PROVINCES["420000"]) == "Hubei (420000 湖北省)"


@pytest.mark.parametrize(("name", "adcode"), [
    ("湖北省", "420000"), ("湖北", "420000"), (" 420000 ", "420000"), ("HUBEI", "420000"),
    ("广西壮族自治区", "450000"), ("广西", "450000"), ("新疆维吾尔自治区", "650000"), ("宁夏", "640000"),
    ("香港特别行政区", "810000"), ("hong-kong", "810000"), ("Xianggang", "810000"),
    ("Macao", "820000"), ("aomen", "820000"), ("Nei Mongol", "150000"), ("neimenggu", "150000"),
    ("Xizang", "540000"), ("Tibet", "540000"), ("北京市", "110000"), ("Shaanxi", "610000"),
    ("Shanxi", "140000"),
])
def test_province_by_name(name, adcode):
    assert province_by_name(name) == PROVINCES[adcode]


@pytest.mark.parametrize("name", ["Atlantis", "", "420100", "湖", "Hubei Province", "CN"])
def test_unknown_names_are_none(name):
    assert province_by_name(name) is None


def test_every_spelling_of_every_province_finds_it():
    for p in PROVINCES.values():
        for name in (p.adcode, p.name_zh, p.name_en, p.name_en.upper(), p.name_en.lower()):
            assert province_by_name(name) is p, name


@pytest.mark.parametrize(("text", "folded"), [
    ("  Inner-Mongolia ", "innermongolia"), ("Hong Kong", "hongkong"), ("Xi'an.", "xian"),
    ("湖北省", "湖北"), ("北京市", "北京"), ("内蒙古自治区", "内蒙古"), ("广西壮族自治区", "广西"),
    ("香港特别行政区", "香港"), ("省", "省"),  # a suffix alone is kept, not folded to nothing
])
def test_fold_name(text, folded):
    assert fold_name(text) == folded


def test_suggest_names_the_closest_provinces():
    assert suggest("Hubie") == "did you mean Hubei (420000 湖北省)? "
    # Two Chinese characters, one wrong: both provinces one character away.
    assert suggest("湖比") == "did you mean Hunan (430000 湖南省) or Hubei (420000 湖北省)? "
    shanxi = suggest("Shanxii")
    assert "Shanxi (140000 山西省)" in shanxi and "Shaanxi (610000 陕西省)" in shanxi
    assert shanxi.count(" or ") <= 2  # three at most
    assert suggest("Atlantis") == "" and suggest("zzzz") == ""


def test_province_is_a_frozen_value():
    p = Province("420000", "湖北省", "Hubei")
    assert p == PROVINCES["420000"] and hash(p) == hash(PROVINCES["420000"])
    with pytest.raises(AttributeError):
        p.adcode = "430000"  # type: ignore[misc]
