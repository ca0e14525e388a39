"""The delivery stage of a run: provincial COGs, the national VRT, class areas and quicklooks.

For each province of the run, the chunks recorded done are mosaicked into a
Cloud-Optimised GeoTIFF masked to the province polygon (``mosaic.write_cog``),
in the grid's CRS or reprojected (``--crs``/workflow ``mosaic.crs``).  A
province with chunks not done is skipped unless ``allow_incomplete``; one whose
file is newer than all its chunks (and in the CRS asked for) is kept.  With a
``distributed.Client`` the provinces are written in parallel, one task each; a
province that fails (a full disk) comes back as a value, every task ends, and
the first failure is raised as one error.  A COG's tags name the chunks it holds
and the share imagery covered (:mod:`sinolc_dist.deliver.catalog`), nothing that differs
between two runs of one configuration; its STAC item ``mosaics/<name>.json``
holds the run id, folder, host and time.

Then, over every provincial file the run has:

* ``stats/classes_km2.csv`` and ``.json``: km² of each class per province and
  in total, equal-area on any grid (:mod:`sinolc_dist.deliver.stats`; the areas were
  counted while each COG was written and travel in its tags);
* ``mosaics/china.vrt``: one national raster for GDAL/QGIS users (GDAL cannot
  read the Zarr v3 store), written here as XML since ``gdalbuildvrt`` may be missing;
* ``mosaics/quicklooks/*.png``: each province and the country in the legend's
  colours, drawn from the COGs' overviews.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
import zarr
from shapely.geometry.base import BaseGeometry

from sinolc_dist import __version__
from sinolc_dist.deliver.catalog import (
    CHUNKS_TAG,
    COUNT_TAG,
    NO_IMAGERY_TAG,
    SHARE_TAG,
    Contents,
    item_path,
    write_item,
)
from sinolc_dist.deliver.cog import (
    AREAS_TAG,
    CRS_TAG,
    CogReport,
    class_areas,
    target_crs,
    union_window,
    write_cog,
)
from sinolc_dist.deliver.stats import ProvinceAreas, area_method, write_tables
from sinolc_dist.deliver.vrt import write_vrt
from sinolc_dist.errors import InputError, SinolcError
from sinolc_dist.grid import ChunkId, Grid, Window
from sinolc_dist.legend import Legend
from sinolc_dist.regions.provinces import Province, province_by_name
from sinolc_dist.regions.region import province_geometries, resolve_region, to_crs
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import FAILED, PENDING, StateStore

if TYPE_CHECKING:
    from distributed import Client

@dataclass(frozen=True)
class _Job:
    """One province's COG to write."""

    province: Province
    dst: Path
    window: Window
    mask: BaseGeometry
    tags: dict[str, str]


def mosaic_run(
    rundir: RunDir, allow_incomplete: bool = False, client: Client | None = None,
    provinces: Sequence[str] = (), crs: str | None = None,
) -> tuple[list[CogReport], list[str]]:
    """Write one COG per province of the run from its done chunks, then the national products.

    Args:
        rundir: The run directory.
        allow_incomplete: Also write provinces with chunks not done (their areas are nodata).
        client: Write the provinces as tasks ``mosaic-<adcode>`` on this cluster
            (in parallel); ``None`` writes them one after the other here.
        provinces: Only these provinces (names or adcodes); default all of the run's.
        crs: CRS of the COGs (``grid`` or e.g. ``EPSG:4326``); default the run's ``mosaic_crs``.

    Returns:
        The reports of the COGs written now, and notes for the user: provinces
        skipped or kept, and where the statistics, VRT and quicklooks are.

    Raises:
        InputError: A province not in the run, or a folder that cannot be written.
        ConfigError: An unknown CRS.

    """
    config = rundir.read_config()
    grid = config.grid
    region = resolve_region(config.region, config.boundaries)
    chosen = _chosen(region.provinces, provinces)
    crs_spec = crs or config.mosaic_crs or "grid"
    tally = _Tally.of(rundir)
    if not tally.by_prov:
        return [], [f"no finished chunks in {rundir.root}: nothing to mosaic yet (run the chunks "
                    "with `sinolc-dist run`; `sinolc-dist status` shows what failed)"]
    stores.open_array(rundir.output, grid)  # a missing or foreign store fails here, not on a worker
    geoms = province_geometries([p.adcode for p in region.provinces], config.boundaries)
    base_tags = _run_tags(rundir, config, grid, region.source)
    crs_label = "grid" if target_crs(grid, crs_spec) is None else crs_spec
    jobs: list[_Job] = []
    notes: list[str] = []
    for prov in chosen:
        job = _province_job(rundir, prov, tally, allow_incomplete, bool(provinces), crs_label)
        if isinstance(job, str) or job is None:
            notes.extend([job] if job else [])
            continue
        tags = {**base_tags, **job[1], **tally.contents[prov.adcode].tags()}
        jobs.append(_Job(prov, job[0], union_window(grid, tally.by_prov[prov.adcode]),
                         to_crs(geoms[prov.adcode], grid.crs), tags))
    reports = _write_all(jobs, grid, rundir.output.resolve(), crs_spec, config.legend, client)
    _write_items(rundir, config, chosen, {r.path for r in reports})
    notes.extend(_national(rundir, grid, config, region.provinces, geoms, tally.by_prov, config.legend))
    return reports, notes


@dataclass
class _Tally:
    """The state's chunks per province: their contents, counts by status, the last one finished."""

    contents: dict[str, Contents]
    status: dict[str, Counter[str]]
    last_done: dict[str, float]

    @classmethod
    def of(cls, rundir: RunDir) -> _Tally:
        contents: dict[str, Contents] = defaultdict(Contents)
        status: dict[str, Counter[str]] = defaultdict(Counter)
        with StateStore(rundir.state) as state:
            for rec in state.records():
                for code in rec.provinces:
                    status[code][rec.status] += 1
                    contents[code].add(rec)
            return cls(contents, status, state.last_finished())

    @property
    def by_prov(self) -> dict[str, tuple]:
        """Each province's finished chunks (provinces with none left out)."""
        return {code: c.chunks for code, c in self.contents.items() if c.chunks}


def _province_job(rundir: RunDir, prov: Province, tally: _Tally, allow_incomplete: bool, named: bool,
                  crs_label: str) -> tuple[Path, dict[str, str]] | str | None:
    """A province's COG path and own tags if it is to be written now, else the note saying why not."""
    counts = tally.status.get(prov.adcode, Counter())
    if not tally.by_prov.get(prov.adcode):
        return f"{prov.name_en}: no finished chunks, no mosaic" if named else None
    missing = counts[PENDING] + counts[FAILED]
    if missing and not allow_incomplete:
        return (f"{prov.name_en}: {missing} chunk(s) not done, mosaic skipped "
                "(rerun them, or mosaic with --allow-incomplete)")
    dst = rundir.mosaic(prov.adcode, prov.name_en)
    if (dst.exists() and dst.stat().st_mtime > tally.last_done.get(prov.adcode, 0.0)
            and _tags(dst).get(CRS_TAG, "grid") == crs_label):
        return f"{prov.name_en}: {dst.name} is up to date"
    return dst.resolve(), {"SINOLC_PROVINCE": f"{prov.adcode} {prov.name_zh} {prov.name_en}",
                           "SINOLC_COMPLETE": "no" if missing else "yes"}


def _write_items(rundir: RunDir, config: RunConfig, chosen: tuple[Province, ...], written: set[Path]) -> None:
    """The STAC items of the COGs written now, and of any kept one whose item was lost (a full disk)."""
    rid = run_id(rundir, config)
    for prov in chosen:
        dst = rundir.mosaic(prov.adcode, prov.name_en).resolve()
        if dst in written or (dst.exists() and not item_path(dst).exists()):
            write_item(dst, f"{rid}-{prov.adcode}", {"run_id": rid, "run_dir": str(rundir.root.resolve())})


def _chosen(run_provinces: tuple[Province, ...], names: Sequence[str]) -> tuple[Province, ...]:
    """The run's provinces named by ``names`` (all of them when none is named)."""
    tokens = [t.strip() for name in names for t in re.split(r"[,，、;]", name) if t.strip()]
    if not tokens:
        return run_provinces
    chosen = []
    for token in tokens:
        prov = province_by_name(token)
        if prov is None or prov not in run_provinces:
            listing = ", ".join(f"{p.name_en} ({p.adcode})" for p in run_provinces)
            what = f"unknown province {token!r}" if prov is None else f"{prov} is not in this run"
            raise InputError(f"{what}: the run's provinces are {listing}")
        chosen.append(prov)
    return tuple(dict.fromkeys(chosen))


def config_digest(config: RunConfig) -> str:
    """SHA-256 of what makes a run's results (workflow, grid, model, region, boundaries, as recorded)."""
    recorded = config.to_dict()
    frozen = {k: recorded.get(k) for k in ("workflow", "grid", "model", "region", "boundaries")}
    return hashlib.sha256(json.dumps(frozen, sort_keys=True).encode()).hexdigest()


def run_id(rundir: RunDir, config: RunConfig) -> str:
    """The run's id: ``run_id`` of run.json if present, else its folder name and a config digest."""
    if config.run_id:
        return str(config.run_id)
    return f"{rundir.root.resolve().name}-{config_digest(config)[:12]}"


def _run_tags(rundir: RunDir, config: RunConfig, grid: Grid, boundaries: str) -> dict[str, str]:
    """Provenance written into every provincial COG.

    Nothing that differs between runs of one configuration: the run id, folder
    and date go to the STAC item (:mod:`sinolc_dist.deliver.catalog`).
    """
    tags = {
        "SINOLC_GRID": json.dumps(grid.to_dict()),
        "SINOLC_MODEL_SHA256": config.model["sha256"],
        "SINOLC_VERSION": __version__,
        "SINOLC_CONFIG_SHA256": config_digest(config),
        "SINOLC_BOUNDARIES": boundaries,
    }
    if (rundir.input / "zarr.json").exists():
        source = zarr.open_group(rundir.input, mode="r", zarr_format=3).attrs.get("sinolc_source")
        if source:
            tags["SINOLC_SOURCE"] = source if isinstance(source, str) else json.dumps(source)
    return tags


def _province_cog(dst: Path, grid: Grid, output: Path, window: Window, mask: BaseGeometry,
                  tags: dict[str, str], crs: str, legend: Legend) -> CogReport:
    """Open the output store where this runs (here or on a worker) and write one province's COG."""
    return write_cog(dst, grid, stores.open_array(output, grid), window, mask_geometry=mask,
                     tags=tags, crs=crs, legend=legend)


@dataclass(frozen=True)
class _Refused:
    """A province's expected failure on a worker, returned as a value, not raised there.

    A raised error would be logged by the worker as "Compute Failed" with its
    traceback, and would end the gather while other provinces are still writing.
    """

    kind: type[SinolcError]
    message: str


def _province_task(*args: Any) -> CogReport | _Refused:
    """:func:`_province_cog` as a cluster task: a :class:`SinolcError` comes back as a :class:`_Refused`."""
    try:
        return _province_cog(*args)
    except SinolcError as exc:
        return _Refused(type(exc), str(exc))


def _write_all(jobs: list[_Job], grid: Grid, output: Path, crs: str, legend: Legend,
               client: Client | None) -> list[CogReport]:
    """Write the provinces' COGs: one task each on ``client``, else one after the other.

    On a cluster every task runs to its end (a finished COG is kept, a failed one
    leaves nothing) before the first failure is raised here, naming how many failed.
    """
    args = [(j.dst, grid, output, j.window, j.mask, j.tags, crs, legend) for j in jobs]
    if client is None:
        return [_province_cog(*a) for a in args]
    futures = [client.submit(_province_task, *a, key=f"mosaic-{j.province.adcode}")
               for j, a in zip(jobs, args, strict=True)]
    results = client.gather(futures)
    refused = [r for r in results if isinstance(r, _Refused)]
    if refused:
        more = f" ({len(refused) - 1} other province(s) failed too)" if len(refused) > 1 else ""
        raise refused[0].kind(refused[0].message + more)
    return results


def _tags(path: Path) -> dict[str, str]:
    with rasterio.open(path) as src:
        return src.tags()


def _national(
    rundir: RunDir, grid: Grid, config: RunConfig, provinces: tuple[Province, ...],
    geoms: dict[str, BaseGeometry], by_prov: dict[str, list[ChunkId]], legend: Legend,
) -> list[str]:
    """Statistics, national VRT and quicklooks over every provincial file of the run."""
    files = {p: f for p in provinces if (f := rundir.mosaic(p.adcode, p.name_en)).exists()}
    if not files:
        return []
    rows = []
    for prov, path in files.items():
        tags = _tags(path)
        if AREAS_TAG in tags:
            km2 = {int(c): float(v) for c, v in json.loads(tags[AREAS_TAG]).items()}
        else:  # written before files carried their areas
            km2 = class_areas(grid, stores.open_array(rundir.output, grid),
                              union_window(grid, by_prov[prov.adcode]),
                              to_crs(geoms[prov.adcode], grid.crs))
        rows.append(ProvinceAreas(prov.adcode, prov.name_en, prov.name_zh,
                                  tags.get("SINOLC_COMPLETE") == "yes", path.name, km2,
                                  tags.get(CHUNKS_TAG, ""), int(tags.get(COUNT_TAG, 0)),
                                  int(tags.get(NO_IMAGERY_TAG, 0)),
                                  float(tags[SHARE_TAG]) if SHARE_TAG in tags else None))
    meta = {"run_id": run_id(rundir, config), "grid_crs": grid.pyproj_crs.to_wkt(),
            "area_method": area_method(grid.pyproj_crs)}
    csv_path, json_path = write_tables(rundir.stats, rows, meta, legend)
    notes = [f"class areas: {csv_path} and {json_path.name}"]
    try:
        notes.append(f"national mosaic: {write_vrt(list(files.values()), rundir.national_vrt, legend)}")
    except InputError as exc:
        notes.append(f"no national mosaic: {exc}")
    notes.append(f"quicklooks: {_quicklooks(rundir.quicklooks, files, legend)}")
    return notes


def _quicklooks(folder: Path, files: dict[Province, Path], legend: Legend) -> Path:
    """A PNG per province whose COG is newer than its PNG, and the country's when any changed."""
    from sinolc_dist.deliver.maps import quicklook  # matplotlib only when there is something to draw

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the quicklook folder {folder} ({exc.strerror}): "
                         "make the run directory writable") from None
    changed = False
    for prov, path in files.items():
        png = folder / f"{path.stem}.png"
        if not png.exists() or png.stat().st_mtime < path.stat().st_mtime:
            quicklook([path], png, title=f"{prov.name_en} ({prov.adcode})", legend=legend)
            changed = True
    country = folder / "china.png"
    if changed or not country.exists():
        quicklook(list(files.values()), country,
                  title=f"land cover: {len(files)} province(s) of the run", legend=legend)
    return folder
