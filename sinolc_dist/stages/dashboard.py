"""The live chunk map on the Dask dashboard: a page served by the scheduler's own web server.

Our clusters' schedulers run in the driver's process (a ``LocalCluster``'s and
dask-jobqueue's alike), so :func:`install_page` adds a few tornado handlers to
the scheduler's ``http_application``: no extra port, no extra process, and the
same TLS as the rest of the dashboard (``distributed.scheduler.dashboard.tls.*``
on that server).  They read the driver's :class:`~sinolc_dist.stages.live.LiveRun`
in memory; only a hovered chunk's worker and error come from the state file
(one row, read-only).  The dashboard's nav bar gets a ``Chunks`` link.

``chunks/state.bin`` is one byte per lattice cell (a national run's 1.7
million, gzip: tens of kB); ``chunks/summary.json`` the counts and the
provinces' progress; both answer in milliseconds, so a page refreshing every
few seconds costs the driver well under 1 % (``benchmarks/bench_dashboard.py``).
"""

from __future__ import annotations

import gzip
import json
import logging
import sqlite3
import time
from typing import Any

import numpy as np
import shapely
from distributed import Client
from tornado import web
from tornado.ioloop import IOLoop

from sinolc_dist.deliver.chunk_map import STATE_CODES, STATE_COLOURS
from sinolc_dist.errors import ConfigError, RunDirError
from sinolc_dist.grid import ChunkId
from sinolc_dist.regions.provinces import PROVINCES
from sinolc_dist.regions.region import province_geometries, to_crs
from sinolc_dist.rundir.state import PENDING, StateReader
from sinolc_dist.stages.dashboard_page import PAGE
from sinolc_dist.stages.live import LiveRun, eta_text

log = logging.getLogger("sinolc_dist.stages.dashboard")
#: The page's name: its path under the dashboard and its nav bar link.
NAME = "chunks"


def province_name(code: str) -> str:
    """``Hubei (湖北省)`` for an adcode, the code itself when unknown."""
    prov = PROVINCES.get(code)
    return f"{prov.name_en} ({prov.name_zh})" if prov else code


def outlines(live: LiveRun, boundaries: str | None) -> list[list[tuple[float, float]]]:
    """The run's province outlines in lattice cells (x = column, y = row), clipped and simplified.

    Simplified to a quarter of a chunk: below what one cell of the page shows.
    """
    grid, lat = live.grid, live.lattice
    step = grid.chunk * grid.resolution
    x0, y0 = grid.origin
    left, top = x0 + lat.col0 * step, y0 - lat.row0 * step
    rows, cols = lat.shape
    view = (left - step, top - (rows + 1) * step, left + (cols + 1) * step, top + step)
    polys = province_geometries(sorted(lat.provinces), boundaries)
    lines = [to_crs(shapely.boundary(g), grid.crs) for g in polys.values()]
    clipped = shapely.clip_by_rect(np.array(lines, dtype=object), *view)
    parts = shapely.get_parts(shapely.simplify(clipped, step / 4))
    out = []
    for part in parts:
        coords = shapely.get_coordinates(part)
        if len(coords) > 1:
            out.append([(round((x - left) / step, 2), round((top - y) / step, 2)) for x, y in coords])
    return out


class _Handler(web.RequestHandler):
    """A handler of the page: the live run, the scheduler, the run's boundaries file."""

    def initialize(self, live: LiveRun, scheduler: Any, boundaries: str | None,
                   cache: dict[str, Any]) -> None:
        self.live, self.scheduler, self.boundaries, self.cache = live, scheduler, boundaries, cache

    def send_json(self, data: Any) -> None:
        """Answer ``data`` as JSON, never cached."""
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))


class PageHandler(_Handler):
    """The HTML page (its script inline)."""

    def get(self) -> None:
        """Serve the page."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE)


class MetaHandler(_Handler):
    """The lattice: size, first chunk, the states' names and colours (in code order)."""

    def get(self) -> None:
        """Serve the lattice's description."""
        lat = self.live.lattice
        states = [{"name": s, "code": c, "colour": STATE_COLOURS[s]} for s, c in STATE_CODES.items()]
        self.send_json({"rows": lat.shape[0], "cols": lat.shape[1], "row0": lat.row0, "col0": lat.col0,
                        "chunk": self.live.grid.chunk, "states": states})


class OutlinesHandler(_Handler):
    """The province outlines, computed once, off the scheduler's event loop."""

    async def get(self) -> None:
        """Serve the outlines (computed on the first request)."""
        if "outlines" not in self.cache:
            loop = IOLoop.current()
            self.cache["outlines"] = await loop.run_in_executor(None, outlines, self.live, self.boundaries)
        self.send_json({"lines": self.cache["outlines"]})


class StateHandler(_Handler):
    """One byte per lattice cell (the state codes), gzip-compressed."""

    def get(self) -> None:
        """Serve the state bytes."""
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Encoding", "gzip")
        self.set_header("Cache-Control", "no-store")
        self.finish(gzip.compress(self.live.codes().tobytes(), compresslevel=1))


class SummaryHandler(_Handler):
    """Run-wide counts, px/s and ETA; per province done %, chunks/h and ETA."""

    def get(self) -> None:
        """Serve the summary."""
        self.send_json(summary(self.live))


class ChunkHandler(_Handler):
    """One chunk: the live state, its worker (the scheduler's, while it runs) and last error (the state's)."""

    def get(self) -> None:
        """Serve one chunk's detail (400 for a bad id, 404 outside the run)."""
        try:
            cid = ChunkId.parse(self.get_argument("id"))
        except ConfigError:
            raise web.HTTPError(400, "give ?id=c/ROW/COL") from None
        info = self.live.chunk(cid)
        if info is None:
            raise web.HTTPError(404, f"chunk {cid.key} is not in this run")
        info["provinces"] = [province_name(p) for p in info["provinces"]]
        info["worker"], info["error"] = recorded_detail(self.live, cid)
        task = self.scheduler.tasks.get(info.pop("task") or "")
        if task is not None and task.processing_on is not None:
            info["worker"] = task.processing_on.address
        info["error"] = info.pop("retry_error") or info["error"]
        self.send_json(info)


def summary(live: LiveRun) -> dict[str, Any]:
    """What ``chunks/summary.json`` says (see :class:`SummaryHandler`)."""
    counts = live.counts()
    left = counts[PENDING] + counts["running"] + counts["retried"]
    elapsed = max(time.time() - live.started, 1e-9)
    provinces = [p | {"name": province_name(p["adcode"])} for p in live.provinces()]
    return {"stage": live.stage, "run": str(live.rundir.root), "counts": counts,
            "px_per_s": round(live.report.pixels / elapsed), "eta": eta_text(left, live.rate()),
            "provinces": provinces}


def recorded_detail(live: LiveRun, cid: ChunkId) -> tuple[str | None, str | None]:
    """``(worker, error)`` the state records for a chunk (read-only; ``None`` when it cannot tell)."""
    try:
        with StateReader(live.state_path, timeout=1) as reader:
            return reader.detail(cid)
    except (RunDirError, sqlite3.Error):  # a state busy or gone: the hover shows what the driver knows
        return None, None


def routes(prefix: str, live: LiveRun, scheduler: Any, boundaries: str | None) -> list[tuple]:
    """The page's tornado routes under the dashboard's ``prefix``."""
    kwargs = {"live": live, "scheduler": scheduler, "boundaries": boundaries, "cache": {}}
    base = prefix.rstrip("/") + "/" + NAME
    return [(base, PageHandler, kwargs), (base + "/meta.json", MetaHandler, kwargs),
            (base + "/outlines.json", OutlinesHandler, kwargs), (base + "/state.bin", StateHandler, kwargs),
            (base + "/summary.json", SummaryHandler, kwargs), (base + "/chunk.json", ChunkHandler, kwargs)]


def install_page(client: Client, live: LiveRun, boundaries: str | None = None) -> str | None:
    """Serve the page on the scheduler's web server and link it in the nav bar; its URL.

    ``None`` (and a log line) when the scheduler does not run in this process
    or has no dashboard: the run goes on without the page.
    """
    cluster = getattr(client, "cluster", None)
    scheduler = getattr(cluster, "scheduler", None)
    app = getattr(scheduler, "http_application", None)
    if app is None or not client.dashboard_link:
        log.info("no live chunk map on the dashboard: the scheduler has no dashboard in this process")
        return None
    prefix = (getattr(cluster, "scheduler_spec", {}).get("options", {}).get("http_prefix") or "/")

    async def add() -> None:  # on the scheduler's event loop, as distributed adds its own routes
        app.add_handlers(r".*", routes(prefix, live, scheduler, boundaries))
        _link_in_nav(scheduler)

    cluster.sync(add)
    url = client.dashboard_link.rsplit("/", 1)[0] + "/" + NAME
    log.info("live chunk map: %s (status/chunks.tif in the run directory for QGIS)", url)
    return url


def _link_in_nav(scheduler: Any) -> None:
    """Add ``Chunks`` to the dashboard's nav bar.

    distributed builds the bar from the ``pages`` list of its memoized
    ``template_variables(scheduler)``, which every Bokeh page renders; the
    list is extended in place (distributed 2026.8).  Without Bokeh nothing changes.
    """
    try:
        from distributed.dashboard.scheduler import template_variables
    except ImportError:
        return
    pages = template_variables(scheduler)["pages"]
    if NAME not in pages:
        pages.append(NAME)
