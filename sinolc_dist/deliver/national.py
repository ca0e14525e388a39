"""The national products over every provincial COG a run has: statistics, VRT, quicklooks, STAC items.

Rewritten after each province is delivered (a national run releases provinces
one after another while inference goes on) and at the end of the mosaic stage;
each is cheap next to a COG: the class areas travel in each COG's tags, the VRT
is XML, the quicklooks are drawn from the COGs' overviews, the catalog is JSON.

* ``stats/classes_km2.csv`` and ``.json``: km² of each class per province and
  in total, equal-area on any grid (:mod:`sinolc_dist.deliver.stats`);
* ``mosaics/china.vrt``: one national raster for GDAL/QGIS users (GDAL cannot
  read the Zarr v3 store), written as XML since ``gdalbuildvrt`` may be missing;
* ``mosaics/quicklooks/*.png``: each province and the country in the legend's colours;
* ``mosaics/catalog.json``, ``collection.json`` and ``<name>.json``: the run's STAC
  catalog, one Item per COG (:mod:`sinolc_dist.deliver.stac`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from sinolc_dist.deliver.catalog import CHUNKS_TAG, COUNT_TAG, NO_IMAGERY_TAG, SHARE_TAG
from sinolc_dist.deliver.cog import AREAS_TAG, class_areas, union_window
from sinolc_dist.deliver.stac import Delivered, read_cog, write_catalog
from sinolc_dist.deliver.stats import ProvinceAreas, area_method, write_tables
from sinolc_dist.deliver.vrt import write_vrt
from sinolc_dist.errors import InputError
from sinolc_dist.grid import ChunkId
from sinolc_dist.legend import Legend
from sinolc_dist.regions.provinces import Province
from sinolc_dist.regions.region import to_crs
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir


def cog_tags(path: Path) -> dict[str, str]:
    """A COG's dataset tags; a file that cannot be read is one :class:`InputError` naming it."""
    return read_cog(path).tags


def delivered_files(rundir: RunDir, provinces: tuple[Province, ...]) -> dict[Province, Path]:
    """The provincial COGs present in the run directory, in the run's province order."""
    return {p: f for p in provinces if (f := rundir.mosaic(p.adcode, p.name_en)).exists()}


def write_national(
    rundir: RunDir, config: RunConfig, run_id: str, provinces: tuple[Province, ...],
    geoms: Mapping[str, BaseGeometry], chunks_of: Callable[[str], list[ChunkId]],
    checksums: Mapping[Path, str] | None = None,
) -> list[str]:
    """Statistics, national VRT, quicklooks and the STAC catalog over every provincial file of the run.

    ``geoms`` are the provinces' lon/lat polygons; ``chunks_of(adcode)`` gives a
    province's done chunks (only for a COG written before files carried their
    class areas); ``checksums`` are the SHA-256 digests of COGs already known
    (computed as they were written), so only the others are read to hash them.
    Returns the notes for the user, naming each file.
    """
    files = delivered_files(rundir, provinces)
    if not files:
        _catalog(rundir, config, run_id, provinces, files, geoms, checksums)
        return []
    legend, grid = config.legend, config.grid
    rows = []
    for prov, path in files.items():
        tags = cog_tags(path)
        if AREAS_TAG in tags:
            km2 = {int(c): float(v) for c, v in json.loads(tags[AREAS_TAG]).items()}
        else:  # written before files carried their areas
            km2 = class_areas(grid, stores.open_array(rundir.output, grid), union_window(
                grid, chunks_of(prov.adcode)), to_crs(geoms[prov.adcode], grid.crs))
        rows.append(ProvinceAreas(prov.adcode, prov.name_en, prov.name_zh,
                                  tags.get("SINOLC_COMPLETE") == "yes", path.name, km2,
                                  tags.get(CHUNKS_TAG, ""), int(tags.get(COUNT_TAG, 0)),
                                  int(tags.get(NO_IMAGERY_TAG, 0)),
                                  float(tags[SHARE_TAG]) if SHARE_TAG in tags else None))
    crs = grid.pyproj_crs
    meta = {"run_id": run_id, "grid_crs": crs.to_wkt(), "area_method": area_method(crs)}
    csv_path, json_path = write_tables(rundir.stats, rows, meta, legend)
    notes = [f"class areas: {csv_path} and {json_path.name}"]
    try:
        notes.append(f"national mosaic: {write_vrt(list(files.values()), rundir.national_vrt, legend)}")
    except InputError as exc:
        notes.append(f"no national mosaic: {exc}")
    notes.append(f"quicklooks: {_quicklooks(rundir.quicklooks, files, legend)}")
    notes.append(f"STAC catalog: {_catalog(rundir, config, run_id, provinces, files, geoms, checksums)}")
    return notes


def _catalog(rundir: RunDir, config: RunConfig, run_id: str, provinces: tuple[Province, ...],
             files: dict[Province, Path], geoms: Mapping[str, BaseGeometry],
             checksums: Mapping[Path, str] | None) -> Path | None:
    """The run's STAC catalog over the files present; the Items of the provinces without one removed."""
    cogs = [Delivered(path, f"{run_id}-{prov.adcode}", f"{prov.name_en} {prov.name_zh} ({prov.adcode})",
                      geoms[prov.adcode]) for prov, path in files.items()]
    absent = [rundir.mosaic(p.adcode, p.name_en) for p in provinces if p not in files]
    return write_catalog(rundir.mosaics, run_id, config.region, config.legend, cogs,
                         {"run_id": run_id, "run_dir": str(rundir.root.resolve())}, absent, checksums)


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
