"""The order chunks are dispatched in: province by province, so provinces finish one after another.

A national run in row-major order completes every province only at its very
end; in province order each province's chunks go out together (smallest
province first, or the order the user gives), so its COG can be delivered while
inference goes on (:mod:`sinolc_dist.stages.release`).  The run's setting
(workflow ``run.order``, ``run --order``) is one of:

* ``province`` (default): provinces with the fewest chunks first;
* ``row-major``: the grid's (row, col) order, one group;
* a list of provinces (adcodes or names, separated by commas): those first, in
  that order, then the rest smallest first.

A task writes whole shards (one writer per shard), so a shard, and every chunk
in it, goes with the first province in the order that needs any of its chunks:
a border chunk belongs to the first province that needs it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import ChunkId, Grid, ShardId
from sinolc_dist.regions.provinces import Province, province_by_name, suggest

PROVINCE, ROW_MAJOR = "province", "row-major"


def parse_order(value: str, provinces: Sequence[Province]) -> str:
    """Check a ``run.order`` value against the run's provinces; return it in canonical form.

    ``province`` and ``row-major`` stay; a list of provinces becomes their
    adcodes joined by commas (names resolved), so the frozen value is exact.
    """
    text = value.strip()
    if text in (PROVINCE, ROW_MAJOR):
        return text
    tokens = [t.strip() for t in re.split(r"[,，、;\s]+", text) if t.strip()]
    if not tokens:
        raise ConfigError(f"run.order {value!r}: give 'province', 'row-major' or provinces "
                          "(adcodes or names, separated by commas)")
    codes = []
    for token in tokens:
        prov = province_by_name(token)
        if prov is None:
            raise ConfigError(f"run.order: unknown province {token!r}; {suggest(token)}give 'province', "
                              "'row-major' or the run's provinces (adcodes or names) separated by commas")
        if prov not in provinces:
            listing = ", ".join(f"{p.name_en} ({p.adcode})" for p in provinces)
            raise ConfigError(f"run.order: {prov} is not in this run's region; its provinces are {listing}")
        codes.append(prov.adcode)
    return ",".join(dict.fromkeys(codes))


def province_ranks(order: str, chunk_provinces: Iterable[tuple[str, ...]]) -> dict[str, int]:
    """Each province's place in the dispatch (0 first): named ones first, then the fewest chunks first.

    ``chunk_provinces`` gives the provinces of every planned chunk; ties go by adcode.
    """
    sizes: Counter[str] = Counter()
    for codes in chunk_provinces:
        sizes.update(codes)
    named = [] if order in (PROVINCE, ROW_MAJOR) else order.split(",")
    rest = sorted((c for c in sizes if c not in named), key=lambda c: (sizes[c], c))
    return {code: rank for rank, code in enumerate([*named, *rest])}


def dispatch_groups(
    grid: Grid, order: str, todo: Sequence[ChunkId], planned: Iterable[tuple[ChunkId, tuple[str, ...]]],
    ranks: dict[str, int],
) -> list[list[ChunkId]]:
    """``todo`` split into dispatch groups of whole shards, in order (one group for ``row-major``).

    ``planned`` gives every planned chunk with its provinces.  Each shard goes
    to the group of the first-ranked province among its chunks' provinces (a
    chunk of no province, outside every polygon, ranks last).
    """
    if order == ROW_MAJOR or not todo:
        return [list(todo)]
    wanted, last = set(todo), len(ranks)
    shard_rank: dict[ShardId, int] = {}
    for cid, codes in planned:
        if cid in wanted:
            rank = min((ranks.get(code, last) for code in codes), default=last)
            sid = grid.shard_of(cid)
            shard_rank[sid] = min(shard_rank.get(sid, last), rank)
    groups: dict[int, list[ChunkId]] = {}
    for cid in todo:
        groups.setdefault(shard_rank.get(grid.shard_of(cid), last), []).append(cid)
    return [groups[rank] for rank in sorted(groups)]
