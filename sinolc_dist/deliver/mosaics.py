"""The delivery of a run: one Cloud-Optimised GeoTIFF per province, released as each province completes.

:class:`Deliveries` holds a run directory's provinces being written: asked to
:meth:`~Deliveries.release` provinces, it submits each one's COG (masked to the
province polygon, from the chunks recorded done) on the run's cluster, ahead
of the inference tasks queued there, without waiting: on the grid's CRS as
many block tasks and one assembly (:func:`sinolc_dist.deliver.tiled.submit_cog`,
so a province's time falls with the number of workers), reprojected as one
task (:func:`sinolc_dist.deliver.cog.write_cog`); with no cluster it writes it
here at once.
:meth:`~Deliveries.collect` takes the COGs finished so far and rewrites the
national products over every provincial file (:mod:`sinolc_dist.deliver.national`).
A run streams its provinces through one of these while inference goes on
(:mod:`sinolc_dist.stages.release`); :func:`mosaic_run` is the whole stage at once.

A province with chunks not done is skipped unless ``allow_incomplete``; one
whose file is newer than all its chunks (and in the CRS asked for) is kept.  A
province that fails on a worker (a full disk) comes back as a value, so no
worker logs "Compute Failed"; the first failure is raised here as one error
once the others have ended.  A COG's tags name the chunks it holds and the
share imagery covered (:mod:`sinolc_dist.deliver.catalog`), nothing that
differs between two runs of one configuration; its STAC Item (in the run's
catalog, :mod:`sinolc_dist.deliver.stac`) holds the run id, folder, host and time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import zarr
from shapely.geometry.base import BaseGeometry

from sinolc_dist import __version__
from sinolc_dist.deliver.blocks import Refused as _Refused
from sinolc_dist.deliver.catalog import Contents
from sinolc_dist.deliver.cog import CRS_TAG, CogReport, target_crs, union_window, write_cog
from sinolc_dist.deliver.national import cog_tags, write_national
from sinolc_dist.deliver.tiled import submit_cog
from sinolc_dist.errors import InputError, SinolcError
from sinolc_dist.grid import ChunkId, Grid, Window
from sinolc_dist.legend import Legend
from sinolc_dist.regions.provinces import Province, province_by_name
from sinolc_dist.regions.region import province_geometries, resolve_region, to_crs
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.config import RunConfig
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, PENDING, StateStore

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("sinolc_dist.deliver")


class Pending(Protocol):
    """A COG being written: finished yet, and its report (raising the write's error)."""

    def done(self) -> bool: ...  # noqa: D102

    def result(self) -> CogReport: ...  # noqa: D102


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
        client: Write the COGs as tasks on this cluster (provinces and their
            blocks in parallel); ``None`` writes them here, one after the other.
        provinces: Only these provinces (names or adcodes); default all of the run's.
        crs: CRS of the COGs (``grid`` or e.g. ``EPSG:4326``); default the run's ``mosaic_crs``.

    Returns:
        The reports of the COGs written now, and notes for the user: provinces
        skipped or kept, and where the statistics, VRT, quicklooks and catalog are.

    Raises:
        InputError: A province not in the run, or a folder that cannot be written.
        ConfigError: An unknown CRS.

    """
    deliveries = Deliveries(rundir, client, crs, allow_incomplete)
    chosen = _chosen(deliveries.region.provinces, provinces)
    with StateStore(rundir.state) as state:
        if not state.count()[DONE]:
            return [], [f"no finished chunks in {rundir.root}: nothing to mosaic yet (run the chunks "
                        "with `sinolc-dist run`; `sinolc-dist status` shows what failed)"]
        notes = deliveries.release(chosen, state, named=bool(provinces))
    reports, national = deliveries.collect(wait=True, always=True)
    return reports, notes + national


class Deliveries:
    """A run directory's provincial COGs being written, and the national products rewritten after them.

    :meth:`release` submits provinces (on ``client``, or here at once when it is
    ``None``) and returns at once; :meth:`collect` takes those finished.
    """

    def __init__(self, rundir: RunDir, client: Client | None = None, crs: str | None = None,
                 allow_incomplete: bool = False) -> None:
        self.rundir, self.client, self.allow_incomplete = rundir, client, allow_incomplete
        self.config = rundir.read_config()
        self.grid = self.config.grid
        self.region = resolve_region(self.config.region, self.config.boundaries)
        self.crs = crs or self.config.mosaic_crs or "grid"
        self.crs_label = "grid" if target_crs(self.grid, self.crs) is None else self.crs
        self.run_id = run_id(rundir, self.config)
        self.geoms = province_geometries([p.adcode for p in self.region.provinces], self.config.boundaries)
        self._tags = _run_tags(rundir, self.config, self.grid, self.region.source)
        self._running: dict[str, tuple[Province, Pending]] = {}
        self._checked = False

    @property
    def running(self) -> tuple[Province, ...]:
        """The provinces whose COG is being written."""
        return tuple(p for p, _ in self._running.values())

    def release(self, provinces: Sequence[Province], state: StateStore, named: bool = False) -> list[str]:
        """Submit the COG of each province that is due; the notes for those skipped or kept.

        ``named``: the user named these provinces, so one with no finished chunk gets a note too.
        """
        if not self._checked:  # a missing or foreign store fails here, not on a worker
            stores.open_array(self.rundir.output, self.grid)
            self._checked = True
        notes = []
        last_finished = functools.cache(state.last_finished)  # one query for all the provinces, if needed
        for prov in provinces:
            if prov.adcode in self._running:
                continue
            job = self._job(prov, state, named, last_finished)
            if isinstance(job, str) or job is None:
                notes.extend([job] if job else [])
                continue
            self._running[prov.adcode] = (prov, self._submit(job))
            log.info("province %s (%s): COG started, %d x %d px -> %s", prov.name_en, prov.adcode,
                     job.window.width, job.window.height, job.dst)
        return notes

    def _job(self, prov: Province, state: StateStore, named: bool,
             last_finished: Callable[[], dict[str, float]]) -> _Job | str | None:
        """A province's COG to write now, else the note saying why not (``None``: nothing to say).

        ``last_finished``: :meth:`StateStore.last_finished`, asked only when a COG already exists.
        """
        contents, counts = Contents(), Counter[str]()
        for rec in state.records(prov.adcode):
            counts[rec.status] += 1
            contents.add(rec)
        if not contents.chunks:
            return f"{prov.name_en}: no finished chunks, no mosaic" if named else None
        missing = counts[PENDING] + counts[FAILED]
        if missing and not self.allow_incomplete:
            return (f"{prov.name_en}: {missing} chunk(s) not done, mosaic skipped "
                    "(rerun them, or mosaic with --allow-incomplete)")
        dst = self.rundir.mosaic(prov.adcode, prov.name_en)
        if (dst.exists() and dst.stat().st_mtime > last_finished().get(prov.adcode, 0.0)
                and cog_tags(dst).get(CRS_TAG, "grid") == self.crs_label):
            return f"{prov.name_en}: {dst.name} is up to date"
        tags = {**self._tags, "SINOLC_PROVINCE": f"{prov.adcode} {prov.name_zh} {prov.name_en}",
                "SINOLC_COMPLETE": "no" if missing else "yes", **contents.tags()}
        return _Job(prov, dst.resolve(), union_window(self.grid, contents.chunks),
                    to_crs(self.geoms[prov.adcode], self.grid.crs), tags)

    def _submit(self, job: _Job) -> Pending:
        """Start one province's COG on the cluster (ahead of queued inference), or here at once.

        On the grid's CRS its blocks are written by many tasks and assembled by
        one (:func:`~sinolc_dist.deliver.tiled.submit_cog`, the same file);
        reprojected, one task writes it (:func:`~sinolc_dist.deliver.cog.write_cog`).
        """
        args = (job.dst, self.grid, self.rundir.output.resolve(), job.window, job.mask, job.tags, self.crs,
                self.config.legend)
        written: Future[CogReport | _Refused] = Future()
        if self.client is not None and self.crs_label == "grid":
            try:
                return submit_cog(self.client, job.dst, self.grid, self.rundir.output.resolve(), job.window,
                                  job.mask, job.tags, self.config.legend, f"mosaic-{job.province.adcode}")
            except SinolcError as exc:  # raised by collect(), as a worker's would be
                written.set_result(_Refused(type(exc), str(exc)))
                return _Writing(written)
        if self.client is None:  # the machine is ours: GDAL compresses on all its cores (the same bytes)
            written.set_result(_province_task(*args, threads="ALL_CPUS"))
            return _Writing(written)
        return _Writing(self.client.submit(_province_task, *args, key=f"mosaic-{job.province.adcode}",
                                           pure=False, priority=10))

    def collect(self, wait: bool = False, always: bool = False) -> tuple[list[CogReport], list[str]]:
        """The COGs finished (all, with ``wait``), then the national products if any finished (or ``always``).

        Every finished province is taken before the first failure is raised as
        one error (naming how many others failed); a COG written is kept.
        """
        finished = {code: entry for code, entry in self._running.items() if wait or entry[1].done()}
        reports, errors = [], []
        for code, (prov, pending) in finished.items():
            del self._running[code]
            try:
                report = pending.result()
            except SinolcError as exc:
                log.error("province %s (%s): COG failed: %s", prov.name_en, code, exc)
                errors.append(exc)
                continue
            reports.append(report)
            log.info("province %s (%s) delivered: %s (%d x %d px, %.1f MB, %.1f s)", prov.name_en, code,
                     report.path, report.width, report.height, report.bytes / 1e6, report.seconds)
        notes = self.national({r.path: r.sha256 for r in reports if r.sha256}) if reports or always else []
        if errors:
            more = f" ({len(errors) - 1} other province(s) failed too)" if len(errors) > 1 else ""
            raise type(errors[0])(str(errors[0]) + more)
        return reports, notes

    def national(self, checksums: Mapping[Path, str] | None = None) -> list[str]:
        """Rewrite statistics, national VRT, quicklooks and catalog over every provincial file.

        ``checksums``: the SHA-256 of COGs just written (their writers hashed them), not read again.
        """
        def chunks_of(adcode: str) -> list[ChunkId]:
            with StateStore(self.rundir.state) as state:
                return [r.chunk for r in state.records(adcode) if r.status == DONE]

        return write_national(self.rundir, self.config, self.run_id, self.region.provinces, self.geoms,
                              chunks_of, checksums)


def _province_task(dst: Path, grid: Grid, output: Path, window: Window, mask: BaseGeometry,
                   tags: dict[str, str], crs: str, legend: Legend,
                   threads: str | None = None) -> CogReport | _Refused:
    """One province's COG, here or on a worker; a :class:`SinolcError` comes back as a value.

    ``threads``: GDAL's compression threads (``ALL_CPUS`` when written here, outside any cluster).
    """
    try:
        return write_cog(dst, grid, stores.open_array(output, grid), window, mask_geometry=mask,
                         tags=tags, crs=crs, legend=legend, threads=threads)
    except SinolcError as exc:
        return _Refused(type(exc), str(exc))


@dataclass(frozen=True)
class _Writing:
    """A COG being written by one task (a ``distributed`` future, or a local one already done)."""

    future: Any

    def done(self) -> bool:
        """Whether the task has ended."""
        return bool(self.future.done())

    def result(self) -> CogReport:
        """The COG's report; the task's error raised here."""
        value = self.future.result()
        if isinstance(value, _Refused):
            raise value.kind(value.message)
        return value


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
