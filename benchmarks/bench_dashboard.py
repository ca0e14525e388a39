"""The live chunk map at national scale: the page's data endpoints, and what an open page costs the dispatch.

Plans ``--region`` (default CN: 574,357 chunks at 4096 px) into a temporary run
directory and records ``--done`` of them done (default 100,000) and ``--failed`` failed.  Then, on a
LocalCluster whose dashboard serves the page (:mod:`sinolc_dist.stages.dashboard`):

* the endpoints through HTTP, as the page asks them: ``chunks/state.bin`` (one
  byte per lattice cell, gzip), ``chunks/summary.json`` (counts, provinces),
  ``chunks/chunk.json`` (a hover); the median of ``--repeat`` requests each,
  target under 1 s;
* the driver's dispatch rate (no-op workers, as ``bench_dispatch.py``, thousands of
  chunks/s: the worst case) over ``--chunks`` pending chunks in three modes, in
  rotating order ``--rounds`` times: ``bare`` (no live view), ``closed`` (the live
  view every run has: the minute line, ``status/chunks.tif`` refreshes, the page
  installed) and ``open`` (a reader fetching state and summary every ``--poll``
  seconds, as an open page does); targets: ``open`` within 5 % of ``closed``, and
  the view's and page's driver CPU at a national run's real pace (64 GPUs at
  4.1e7 px/s: 156 chunks/s of 4096² px) under 5 % of a core.

``--screenshot PNG`` also keeps what headless Chromium shows of the page.

    python benchmarks/bench_dashboard.py [--region CN] [--done 100000] [--chunks 60000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_dispatch import no_op
from distributed import Client, LocalCluster
from results_file import save

from sinolc_dist.engine.inference import ModelRef, shard_tasks
from sinolc_dist.grid import Grid
from sinolc_dist.regions.plan import make_plan, record_plan
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import PENDING, ChunkResult, StateStore
from sinolc_dist.stages.dashboard import install_page
from sinolc_dist.stages.dispatch import Dispatcher
from sinolc_dist.stages.live import LiveRun
from sinolc_dist.stages.workflow import load_workflow


def fetch(url: str) -> tuple[float, int]:
    """Seconds one GET takes (decompressing as a browser does) and the bytes that came over the wire."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
        if resp.headers.get("Content-Encoding") == "gzip":
            gzip.decompress(body)
    return time.perf_counter() - t0, len(body)


def endpoint_seconds(url: str, repeat: int, hovered: str) -> dict[str, dict[str, float]]:
    """Median seconds and wire bytes of each data endpoint (``hovered``: a chunk id for ``chunk.json``)."""
    out = {}
    for name in ("state.bin", "summary.json", f"chunk.json?id={hovered}", "meta.json"):
        runs = [fetch(f"{url}/{name}") for _ in range(repeat)]
        out[name.split("?")[0]] = {"median_s": statistics.median(s for s, _ in runs), "bytes": runs[0][1]}
    return out


class Poller(threading.Thread):
    """What an open page asks every ``every`` seconds: the state bytes and the summary."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every, self.stop, self.requests = url, every, threading.Event(), 0

    def run(self) -> None:  # noqa: D102
        while not self.stop.wait(self.every):
            fetch(f"{self.url}/state.bin")
            fetch(f"{self.url}/summary.json")
            self.requests += 2


def dispatch_rate(client: Client, state: StateStore, grid: Grid, chunks: list, live: LiveRun | None,
                  url: str | None, poll: float) -> tuple[float, float, int]:
    """Chunks/s of the real dispatcher over ``chunks`` (no-op work), with or without the live view.

    Also the driver process's CPU µs per chunk (its threads: dispatch, scheduler, page, timer), which
    other load on the machine disturbs less than the rate; and the page requests made.
    """
    dispatcher = Dispatcher(client, state, retries=0, max_in_flight=64, work=no_op)
    poller = Poller(url, poll) if url else None
    if live is not None:
        dispatcher.watchers.append(live)
    if poller:
        poller.start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    dispatcher.run(shard_tasks(grid, chunks, "-", "-", ModelRef("no-op")))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if poller:
        poller.stop.set()
        poller.join()
    return len(chunks) / seconds, cpu / len(chunks) * 1e6, poller.requests if poller else 0


def screenshot(url: str, path: Path) -> None:
    """Headless Chromium's picture of the page once it has drawn (Debian's ``chromium``)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: no screenshot")
        return
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1700,1150", "--virtual-time-budget=15000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=300)
    print(f"screenshot: {path}")


#: The dispatch's three modes: no live view at all, the live view with no page open, a page open.
MODES = ("bare", "closed", "open")


def compare(client: Client, state: StateStore, grid: Grid, live: LiveRun, url: str, pending: list,
            per: int, rounds: int, poll: float) -> dict[str, Any]:
    """Dispatch rates and driver CPU per chunk in each of :data:`MODES`, rounds in rotating order.

    ``open`` against ``closed`` is what an open page costs the dispatch (the live view runs in
    every run); ``closed`` against ``bare`` is what the live view itself costs per chunk.
    """
    out: dict[str, Any] = {f"{what}_{m}": [] for m in MODES for what in ("chunks_per_s", "driver_cpu_us")}
    out["page_requests"] = 0
    order = [MODES[(r + k) % 3] for r in range(rounds) for k in range(3)]
    for i, mode in enumerate(order):
        rate, us, n = dispatch_rate(client, state, grid, pending[i * per:(i + 1) * per],
                                    None if mode == "bare" else live, url if mode == "open" else None, poll)
        out[f"chunks_per_s_{mode}"].append(rate)
        out[f"driver_cpu_us_{mode}"].append(us)
        out["page_requests"] += n
    rate = {m: statistics.median(out[f"chunks_per_s_{m}"]) for m in MODES}
    cpu = {m: statistics.median(out[f"driver_cpu_us_{m}"]) for m in MODES}
    out["page_slowdown_pct"] = 100 * (1 - rate["open"] / rate["closed"])
    out["live_view_slowdown_pct"] = 100 * (1 - rate["closed"] / rate["bare"])
    out["live_view_cpu_us_per_chunk"] = cpu["closed"] - cpu["bare"]
    # A national run's real pace: 64 GPUs at 4.1e7 px/s each, 4096² px chunks (README, Speed and scale).
    national = 64 * 4.1e7 / 4096**2
    out["national_chunks_per_s"] = national
    out["national_cpu_pct"] = 100 * (cpu["open"] - cpu["bare"]) * 1e-6 * national
    return out


def arguments() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--region", default="CN")
    ap.add_argument("--workflow", default="cn")
    ap.add_argument("--done", type=int, default=100_000)
    ap.add_argument("--failed", type=int, default=0, help="chunks recorded failed after the done ones")
    ap.add_argument("--chunks", type=int, default=60_000, help="pending chunks dispatched per round and mode")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=9, help="requests per endpoint")
    ap.add_argument("--poll", type=float, default=3.0, help="seconds between an open page's requests")
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--out", default=None)
    return ap.parse_args()


def main() -> None:
    """Plan, record ``--done`` chunks done, time the endpoints and the dispatch with and without the page."""
    args = arguments()
    grid = load_workflow(args.workflow).grid
    with tempfile.TemporaryDirectory() as tmp:
        rundir = RunDir(Path(tmp)).create()
        record_plan(make_plan(args.region, grid), rundir)
        with StateStore(rundir.state) as state:
            pending = state.chunk_ids(PENDING)
            done, failed = pending[:args.done], pending[args.done:args.done + args.failed]
            pending = pending[args.done + args.failed:]
            state.record([ChunkResult(c, True, "bench", 0.0, 30.0, "0" * 16) for c in done])
            state.record([ChunkResult(c, False, "bench", 0.0, 5.0, error="OSError: bench") for c in failed])
            planned = sum(state.count().values())
        t0 = time.perf_counter()
        live = LiveRun(rundir, rundir.state, grid, "run")
        live_start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        live.write_map()
        map_s = time.perf_counter() - t0
        rounds = min(args.rounds, max(1, len(pending) // (2 * args.chunks)))
        per = min(args.chunks, len(pending) // (2 * rounds))
        with StateStore(rundir.state) as state, \
                LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                             dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            url = install_page(client, live)
            endpoints = endpoint_seconds(url, args.repeat, done[0].key)
            live.start()
            compared = compare(client, state, grid, live, url, pending, per, rounds, args.poll)
            live.stop()
            if args.screenshot:
                screenshot(url, args.screenshot)
    result = {
        "benchmark": "dashboard", "region": args.region, "grid_chunk": grid.chunk, "planned": planned,
        "done_before": len(done), "failed_before": len(failed), "lattice": list(live.lattice.shape),
        "live_start_seconds": live_start_s, "chunk_map_seconds": map_s, "endpoints": endpoints,
        "chunks_per_round": per, "rounds": rounds, "poll_seconds": args.poll, **compared,
        "targets": {"state_bin_s": 1.0, "page_slowdown_pct": 5.0, "national_cpu_pct": 5.0},
    }
    print(f"{planned:,} chunks planned, {len(done):,} done; lattice {live.lattice.shape}; live view "
          f"{live_start_s:.1f} s to start, chunks.tif {map_s:.2f} s; state.bin "
          f"{endpoints['state.bin']['median_s'] * 1e3:.0f} ms ({endpoints['state.bin']['bytes']:,} B), "
          f"summary.json {endpoints['summary.json']['median_s'] * 1e3:.0f} ms; no-op dispatch "
          f"{compared['page_slowdown_pct']:+.1f} % slower with a page open than closed "
          f"({compared['page_requests']} page requests), the live view itself "
          f"{compared['live_view_slowdown_pct']:+.1f} % ({compared['live_view_cpu_us_per_chunk']:.0f} µs "
          f"of driver CPU per chunk); at a national run's pace ({compared['national_chunks_per_s']:.0f} "
          f"chunks/s) the view and an open page cost {compared['national_cpu_pct']:.2f} % of a core")
    save(result, args.out, f"dashboard-{args.region.lower()}.json")


if __name__ == "__main__":
    main()
