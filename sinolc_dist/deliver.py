"""The delivery stage of a run: provincial COGs from the output store.

For each province of the run, the chunks recorded done are mosaicked into a
Cloud-Optimised GeoTIFF masked to the province polygon (``mosaic.write_cog``).
A province with chunks not done is skipped unless ``allow_incomplete``; one
whose file is newer than all its chunks is kept.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

from sinolc_dist import __version__, stores
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.mosaic import CogReport, union_window, write_cog
from sinolc_dist.regions import province_geometries, resolve_region, to_crs
from sinolc_dist.rundir import RunDir
from sinolc_dist.state import DONE, FAILED, PENDING, StateStore


def _mosaic_path(rundir: RunDir, adcode: str, name: str) -> Path:
    return rundir.mosaics / f"{adcode}_{name.replace(' ', '-')}.tif"


def mosaic_run(rundir: RunDir, allow_incomplete: bool = False) -> tuple[list[CogReport], list[str]]:
    """Write one COG per province of the run from its done chunks.

    A province with chunks not done is skipped (with a note) unless
    ``allow_incomplete``; one whose file is newer than all its chunks is kept.
    """
    config = rundir.read_config()
    grid = Grid.from_dict(config["grid"])
    region = resolve_region(config["region"], config["boundaries"])
    by_prov: dict[str, list[ChunkId]] = defaultdict(list)
    status_by_prov: dict[str, Counter[str]] = defaultdict(Counter)
    with StateStore(rundir.state) as state:
        for rec in state.records():
            for code in rec.provinces:
                status_by_prov[code][rec.status] += 1
                if rec.status == DONE:
                    by_prov[code].append(rec.chunk)
        last_done = state.last_finished()
    if not by_prov:
        return [], [f"no finished chunks in {rundir.root}: nothing to mosaic yet"]
    classes = stores.open_array(rundir.output, grid)
    geoms = province_geometries([p.adcode for p in region.provinces], config["boundaries"])
    reports, notes = [], []
    for prov in region.provinces:
        counts = status_by_prov.get(prov.adcode, Counter())
        if not by_prov.get(prov.adcode):
            continue
        missing = counts[PENDING] + counts[FAILED]
        if missing and not allow_incomplete:
            notes.append(f"{prov.name_en}: {missing} chunk(s) not done, mosaic skipped "
                         "(rerun them, or mosaic with --allow-incomplete)")
            continue
        dst = _mosaic_path(rundir, prov.adcode, prov.name_en)
        if dst.exists() and dst.stat().st_mtime > last_done.get(prov.adcode, 0.0):
            notes.append(f"{prov.name_en}: {dst.name} is up to date")
            continue
        mask = to_crs(geoms[prov.adcode], grid.crs)
        tags = {
            "SINOLC_GRID": json.dumps(grid.to_dict()),
            "SINOLC_MODEL_SHA256": config["model"]["sha256"],
            "SINOLC_VERSION": __version__,
            "SINOLC_RUN": str(rundir.root.resolve()),
            "SINOLC_PROVINCE": f"{prov.adcode} {prov.name_zh} {prov.name_en}",
            "SINOLC_COMPLETE": "no" if missing else "yes",
            "SINOLC_DATE": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        reports.append(write_cog(dst, grid, classes, union_window(grid, by_prov[prov.adcode]),
                                 mask_geometry=mask, tags=tags))
    return reports, notes
