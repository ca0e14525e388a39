"""How much of each chunk the imagery covers, known from the index's footprints before any dispatch.

A source's footprint is the box of its densified bounds in the grid's CRS
(:class:`~sinolc_dist.imagery.sources.Source`), so a chunk's share is an upper
bound: a chunk with share 0 certainly has no imagery, one with share > 0 may
still hold a nodata gap inside a scene.  Chunks with share 0 are recorded
``no-imagery`` at once and never dispatched; a region that no footprint meets
is an error naming the imagery's CRS and bounds against the region's.  The
shares are stored in the state's ``coverage`` column and summed per province
as km² with and without imagery (``plan``, ``run``, ``status``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer

from sinolc_dist.errors import InputError
from sinolc_dist.grid import LONLAT, ChunkId, Grid
from sinolc_dist.imagery.index import build_index
from sinolc_dist.imagery.sources import CompositeOptions, ImageryIndex
from sinolc_dist.regions.plan import Plan
from sinolc_dist.regions.region import Region, to_crs
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, NO_IMAGERY, StateStore

#: Chunks intersected with the footprints at once (bounds the memory of a national plan).
_BATCH = 65_536


def _boxes(index: ImageryIndex) -> np.ndarray:
    """The sources' footprints (grid CRS) as shapely boxes, in index order."""
    return shapely.box(*np.array([s.bounds for s in index.sources]).reshape(-1, 4).T)


def chunk_shares(grid: Grid, chunks: Iterable[ChunkId], index: ImageryIndex) -> dict[ChunkId, float]:
    """Each chunk's share (0–1) of area inside the footprints; an upper bound of its imagery.

    Each chunk is clipped against only the footprints that meet it (the index's
    tree), so the cost grows with chunks × overlapping files, not with the union.
    """
    ids = list(chunks)
    sources = _boxes(index)
    tree = shapely.STRtree(sources)
    out: dict[ChunkId, float] = {}
    for start in range(0, len(ids), _BATCH):
        part = ids[start:start + _BATCH]
        if not part:
            break
        boxes = shapely.box(*np.array([grid.chunk_bounds(c) for c in part]).T)
        chunk_i, source_i = tree.query(boxes, predicate="intersects")
        pieces = shapely.intersection(boxes[chunk_i], sources[source_i])
        area = np.zeros(len(part))
        single = np.bincount(chunk_i, minlength=len(part)) == 1
        one = single[chunk_i]
        np.add.at(area, chunk_i[one], shapely.area(pieces[one]))
        multi = np.flatnonzero(~one)
        multi = multi[np.argsort(chunk_i[multi], kind="stable")]
        starts = np.flatnonzero(np.diff(chunk_i[multi], prepend=-1))
        for group in np.split(multi, starts[1:]) if len(multi) else []:  # overlapping files: union once
            area[chunk_i[group[0]]] = shapely.area(shapely.union_all(pieces[group]))
        shares = np.minimum(area / shapely.area(boxes), 1.0)
        out.update(zip(part, shares.tolist(), strict=True))
    return out


def _lonlat_bounds(bounds: tuple[float, float, float, float], crs: str) -> str:
    left, bottom, right, top = Transformer.from_crs(crs, LONLAT, always_xy=True).transform_bounds(
        *bounds, densify_pts=21)
    return f"lon {left:.3f}..{right:.3f}, lat {bottom:.3f}..{top:.3f}"


def require_overlap(index: ImageryIndex, region: Region, grid: Grid, what: str = "the imagery") -> None:
    """Raise :class:`InputError` when no footprint meets the region (checked before any write).

    The message names the imagery's CRS(s) and lon/lat bounds against the region's, which
    is what tells a scene in the wrong place (or a wrong CRS tag) from a wrong region.
    """
    sources = _boxes(index)
    area = to_crs(region.geometry, grid.crs)
    if len(shapely.STRtree(sources).query(area, predicate="intersects")):
        return
    crss = sorted({s.crs for s in index.sources})
    raise InputError(
        f"{what} ({len(index.sources)} source(s), CRS {', '.join(crss[:3])}) lies at "
        f"{_lonlat_bounds(tuple(shapely.total_bounds(sources)), grid.crs)}, outside region "
        f"{region.spec!r} at {_lonlat_bounds(area.bounds, grid.crs)}: give imagery over the region "
        "(or fix the files' CRS)"
    )


@dataclass(frozen=True)
class CoverageUpdate:
    """What :func:`record_coverage` changed: chunks newly without imagery, and chunks given back."""

    no_imagery: int = 0
    restored: int = 0
    covered: int = 0


def record_coverage(state: StateStore, shares: dict[ChunkId, float]) -> CoverageUpdate:
    """Store the shares, mark unfinished chunks with share 0 ``no-imagery``, re-plan the others.

    A chunk recorded ``no-imagery`` that imagery now touches is pending again; a done
    chunk keeps its status (its output stays until the imagery gate redoes it).
    """
    status = {r.chunk: r.status for r in state.records()}
    state.set_coverage(shares.items())
    empty = [c for c, s in shares.items() if s <= 0.0 and status.get(c) not in (DONE, NO_IMAGERY, None)]
    back = [c for c, s in shares.items() if s > 0.0 and status.get(c) == NO_IMAGERY]
    state.mark_no_imagery(empty)
    state.reset(back)
    return CoverageUpdate(len(empty), len(back), sum(s > 0.0 for s in shares.values()))


@dataclass(frozen=True)
class ProvinceCoverage:
    """Land of one province (or ``total``) with and without imagery, km² (from chunk shares)."""

    adcode: str
    km2_with: float
    km2_without: float
    unknown: bool = False
    name: str = ""


def province_coverage(groups: Iterable[tuple[tuple[str, ...], int, float, int]],
                      land_km2: dict[str, float]) -> list[ProvinceCoverage]:
    """Per province: its land km² split by the mean share of its chunks, and the total.

    ``groups`` are ``(provinces, chunks, sum of shares, chunks with a known share)``
    (:meth:`StateStore.coverage_groups`); a province with an unknown share (no index:
    a store written by other means) is reported ``unknown``.  A chunk on a border
    counts whole in each province it touches, so the split is an estimate.
    """
    chunks: dict[str, int] = {}
    shares: dict[str, float] = {}
    known: dict[str, int] = {}
    for codes, n, total, n_known in groups:
        for code in codes:
            chunks[code] = chunks.get(code, 0) + n
            shares[code] = shares.get(code, 0.0) + total
            known[code] = known.get(code, 0) + n_known
    rows = []
    for code in sorted(land_km2):
        land = land_km2[code]
        n = chunks.get(code, 0)
        with_ = land * shares.get(code, 0.0) / n if n else 0.0
        rows.append(ProvinceCoverage(code, with_, land - with_, known.get(code, 0) < n))
    total_with = sum(r.km2_with for r in rows)
    rows.append(ProvinceCoverage("total", total_with, sum(land_km2.values()) - total_with,
                                 any(r.unknown for r in rows)))
    return rows


def coverage_lines(rows: list[ProvinceCoverage]) -> list[str]:
    """One line per province: ``imagery: NAME: X km² with imagery (P %), Y km² without``."""
    return [f"imagery: {r.name or r.adcode}: "
            + ("coverage unknown (no imagery index)" if r.unknown else
               f"{_km2(r.km2_with)} km² with imagery ({_share(r)}), {_km2(r.km2_without)} km² without")
            for r in rows]


def _km2(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def _share(row: ProvinceCoverage) -> str:
    land = row.km2_with + row.km2_without
    return f"{100 * row.km2_with / land:.0f} %" if land else "-"


def run_index(run_dir: Path, direct: ImageryIndex | None) -> ImageryIndex | None:
    """The index a run reads through: ``run --imagery``'s, else the ingest's saved one (if any)."""
    path = RunDir(Path(run_dir)).imagery_index
    return direct if direct is not None else ImageryIndex.load(path) if path.exists() else None


def run_shares(rundir: RunDir, grid: Grid, state: StateStore, direct: bool) -> dict[ChunkId, float]:
    """Each planned chunk's share of imagery for a run; empty when no index tells it.

    From the footprints; reading an ingested store, 0 as well where the ingest
    wrote nothing (a chunk it did not plan, or recorded ``no-imagery``).
    """
    if not rundir.imagery_index.exists():
        return {}  # a store written by other means (the demo's): coverage unknown, every chunk runs
    shares = chunk_shares(grid, state.chunk_ids(), ImageryIndex.load(rundir.imagery_index))
    if not direct and rundir.ingest_state.exists():
        with StateStore(rundir.ingest_state) as ingest:
            held = {r.chunk for r in ingest.records() if r.status != NO_IMAGERY}
        shares = {c: s if c in held else 0.0 for c, s in shares.items()}
    return shares


def region_coverage(rundir: RunDir, state: StateStore) -> list[ProvinceCoverage]:
    """Per province of the run's plan (``plan.json``): km² with and without imagery.

    Empty when there is no plan or no chunk's coverage is known (no imagery index).
    """
    groups = list(state.coverage_groups())
    if not rundir.plan.exists() or not any(known for *_, known in groups):
        return []
    rows = json.loads(rundir.plan.read_text(encoding="utf-8"))["provinces"]
    names = {r["adcode"]: r["name"] for r in rows}
    return [replace(r, name=names.get(r.adcode, r.adcode))
            for r in province_coverage(groups, {r["adcode"]: r["land_km2"] for r in rows})]


def apply_run_coverage(rundir: RunDir, grid: Grid, state: StateStore, direct: bool) -> list[str]:
    """Record a run's coverage before dispatch; the summary's notes (no-imagery chunks, km² per province).

    Raises :class:`InputError` when the imagery holds nothing for any planned chunk
    (an ingested store filled for another region): nothing would be classified.
    """
    shares = run_shares(rundir, grid, state, direct)
    if not shares:
        return []
    if not any(s > 0.0 for s in shares.values()):
        source = "run --imagery" if direct else f"the ingested store {rundir.input}"
        raise InputError(f"{source} holds no imagery for any of the {len(shares)} chunk(s) of this run's "
                         "region: give imagery over the region (`sinolc-dist ingest` it, or `run --imagery`)")
    update = record_coverage(state, shares)
    empty = state.count()[NO_IMAGERY]
    notes = [f"{empty} chunk(s) have no imagery (recorded no-imagery, not classified)"] if empty else []
    if update.restored:
        notes.append(f"{update.restored} chunk(s) recorded no-imagery before are covered now and were queued")
    return notes + coverage_lines(region_coverage(rundir, state))


def plan_coverage(plan: Plan, index: ImageryIndex) -> list[ProvinceCoverage]:
    """Per province of a plan: km² with and without imagery, from the index's footprints."""
    shares = chunk_shares(plan.grid, (c for c, _ in plan.chunks()), index)
    groups = [(codes, 1, shares[c], 1) for c, codes in plan.chunks()]
    names = {r.adcode: r.name for r in plan.rows}
    return [replace(r, name=names.get(r.adcode, r.adcode))
            for r in province_coverage(groups, {r.adcode: r.land_km2 for r in plan.rows})]


def plan_imagery(plan: Plan, imagery: tuple[str, ...], zoom: int | None,
                 run_dir: Path) -> list[ProvinceCoverage]:
    """``plan``'s km² with and without imagery: of ``imagery``, else of the run directory's index.

    Empty when neither is there (or the saved index is for another grid); ``imagery``
    that misses the region is an :class:`InputError`, as for ``run`` and ``ingest``.
    """
    index = build_index(imagery, plan.grid, CompositeOptions(bands=1), zoom).index if imagery \
        else run_index(run_dir, None)
    if index is None or index.grid != plan.grid:
        return []
    if imagery:
        require_overlap(index, plan.region, plan.grid, "the imagery")
    return plan_coverage(plan, index)


def imagery_gate(rundir: RunDir, state: StateStore) -> tuple[set[ChunkId], list[ChunkId]]:
    """Chunks whose imagery is not ingested yet, and done chunks whose imagery changed since.

    Only chunks that an ingest planned are gated: imagery written otherwise is trusted.
    """
    if not rundir.ingest_state.exists():
        return set(), []
    with StateStore(rundir.ingest_state) as ingest:
        ingested = ingest.finished()
        planned = set(ingest.chunk_ids()) - set(ingest.chunk_ids(NO_IMAGERY))
    waiting = planned - set(ingested)
    changed = sorted(c for c, t in state.finished().items() if ingested.get(c, 0.0) > t)
    return waiting, changed
