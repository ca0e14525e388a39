"""The dispatch order: province by province, smallest (or named) first, border shards to the first."""

from __future__ import annotations

import pytest

from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import ChunkId
from sinolc_dist.regions.order import PROVINCE, ROW_MAJOR, dispatch_groups, parse_order, province_ranks
from sinolc_dist.regions.provinces import PROVINCES
from tests.conftest import small_grid

RUN = tuple(PROVINCES[c] for c in ("420000", "430000", "360000"))  # Hubei, Hunan, Jiangxi


@pytest.mark.parametrize(("value", "expected"), [
    ("province", PROVINCE), (" row-major ", ROW_MAJOR), ("430000", "430000"),
    ("Jiangxi, 湖北", "360000,420000"), ("hunan;hunan", "430000"),
])
def test_parse_order_gives_a_canonical_value(value, expected):
    assert parse_order(value, RUN) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("Hubie", "unknown province 'Hubie'; did you mean"),
    ("Sichuan", "Sichuan"),
    (" , ", "give 'province', 'row-major'"),
])
def test_parse_order_names_the_mistake(value, message):
    with pytest.raises(ConfigError, match=r"run\.order") as err:
        parse_order(value, RUN)
    assert message in str(err.value)
    if value == "Sichuan":
        assert "not in this run's region" in str(err.value) and "Hubei (420000)" in str(err.value)


def test_ranks_put_the_smallest_first_and_named_ones_before_all():
    planned = [("420000",)] * 5 + [("430000",)] * 2 + [("360000", "430000")] * 2 + [("360000",)]
    # chunks: Hubei 5, Hunan 4, Jiangxi 3
    assert province_ranks(PROVINCE, planned) == {"360000": 0, "430000": 1, "420000": 2}
    assert province_ranks("420000", planned) == {"420000": 0, "360000": 1, "430000": 2}
    assert province_ranks(ROW_MAJOR, planned) == {"360000": 0, "430000": 1, "420000": 2}


def test_groups_are_whole_shards_and_a_border_shard_goes_to_the_first_province():
    grid = small_grid(size=(256, 512), chunk=64, shard=2)  # 4 x 8 chunks, 2 x 4 shards
    chunks = [ChunkId(r, c) for r in range(4) for c in range(8)]
    # Columns 0-2: Hubei; 3-4: both (the border); 5-7: Hunan.
    provinces = {c: ("420000",) if c.col < 3 else ("420000", "430000") if c.col < 5 else ("430000",)
                 for c in chunks}
    ranks = {"430000": 0, "420000": 1}
    groups = dispatch_groups(grid, "430000", chunks, provinces.items(), ranks)
    first, second = groups
    # Shards are 2 chunks wide: columns 2-3 and 4-5 hold Hunan chunks, so they go first whole.
    assert {c.col for c in first} == {2, 3, 4, 5, 6, 7} and {c.col for c in second} == {0, 1}
    assert sorted(first + second) == chunks
    for group in groups:
        for sid, members in grid.by_shard(group).items():
            assert len(members) == 4, sid  # every shard whole inside one group
    assert dispatch_groups(grid, ROW_MAJOR, chunks, provinces.items(), ranks) == [chunks]


def test_a_chunk_of_no_province_goes_last():
    grid = small_grid(size=(64, 128), chunk=64, shard=1)
    chunks = [ChunkId(0, 0), ChunkId(0, 1)]
    groups = dispatch_groups(grid, PROVINCE, chunks, [(chunks[0], ()), (chunks[1], ("420000",))],
                             {"420000": 0})
    assert groups == [[ChunkId(0, 1)], [ChunkId(0, 0)]]
