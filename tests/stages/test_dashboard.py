"""The live chunk map on the Dask dashboard of a real LocalCluster run, read by a headless Chromium.

The screenshot is kept in pytest's cache, ``.pytest_cache/d/artefacts/dashboard-chunks.png``.
"""

from __future__ import annotations

import dataclasses
import gzip
import html
import json
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import dask.config
import numpy as np
import pytest
from conftest import small_grid
from distributed import Client, LocalCluster
from PIL import Image

from sinolc_dist.deliver.chunk_map import STATE_CODES, STATE_COLOURS, ChunkLattice
from sinolc_dist.errors import ChunkFailures
from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, ChunkResult, StateStore
from sinolc_dist.stages import infer
from sinolc_dist.stages.dashboard import install_page
from sinolc_dist.stages.live import LiveRun

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read()
        return gzip.decompress(body) if resp.headers.get("Content-Encoding") == "gzip" else body


def _chromium(url: str, *args: str) -> str:
    """Chromium headless on ``url``: the virtual time budget lets the page fetch and draw twice."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1200,900", "--virtual-time-budget=8000", *args, url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _look(url: str, shot: Path) -> dict:
    """What the page shows: its endpoints, the DOM after drawing, the screenshot (all while the run holds)."""
    base = url.rsplit("/", 1)[0]
    seen = {"meta": json.loads(_get(f"{url}/meta.json")), "summary": json.loads(_get(f"{url}/summary.json")),
            "codes": np.frombuffer(_get(f"{url}/state.bin"), np.uint8),
            "nav": _get(f"{base}/status").decode()}
    failed = np.flatnonzero(seen["codes"] == STATE_CODES[FAILED])[0]
    row, col = divmod(int(failed), seen["meta"]["cols"])
    seen["failed_chunk"] = json.loads(_get(f"{url}/chunk.json?id=c/{seen['meta']['row0'] + row}/"
                                           f"{seen['meta']['col0'] + col}"))
    for bad, code in (("nonsense", 400), ("c/0/0", 404)):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(f"{url}/chunk.json?id={bad}")
        seen[f"http_{code}"] = err.value.code
    canvas = re.search(r"<canvas[^>]*>", _chromium(url, "--dump-dom")).group(0)
    seen["canvas"] = {k: html.unescape(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', canvas)}
    _chromium(url, f"--screenshot={shot}")
    return seen


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_shows_done_chunks_done_and_failed_ones_failed(small_run, tmp_path, tmp_path_factory):
    rundir, req = small_run["rundir"], dataclasses.replace(small_run["req"], mosaic=False)
    victim = next(p for p in sorted((rundir.input / "image" / "c").rglob("*")) if p.is_file())
    victim.write_bytes(b"\x00garbage" * 64)  # the chunks reading this input shard fail
    shot, seen = tmp_path / "dashboard-chunks.png", {}

    def on_progress(report, total):  # after the last flush every chunk is recorded; the cluster is up
        if report.done + report.failed == total and "canvas" not in seen:
            seen.update(_look(seen["url"], shot))

    with pytest.raises(ChunkFailures):
        infer.run(req, on_start=lambda s: seen.update(url=s.live_map), on_progress=on_progress)
    artefacts = tmp_path_factory.getbasetemp() / "artefacts"  # pytest keeps its last three base folders
    artefacts.mkdir(exist_ok=True)
    shutil.copy(shot, artefacts / shot.name)
    with StateStore(rundir.state) as state:
        counts = state.count()
    assert counts[FAILED] >= 1 and counts[DONE] >= 1
    # The page's data is the state's, and the browser drew each chunk in its state's colour.
    assert {s: seen["summary"]["counts"][s] for s in (DONE, FAILED)} == {DONE: counts[DONE],
                                                                          FAILED: counts[FAILED]}
    lattice = ChunkLattice.from_state(rundir.state, rundir.read_config().grid)
    assert np.array_equal(seen["codes"], lattice.state.ravel())
    assert int(seen["canvas"]["rendered"]) >= 2
    assert json.loads(seen["canvas"]["drawn"]) == {DONE: counts[DONE], FAILED: counts[FAILED]}
    assert seen["failed_chunk"]["state"] == FAILED and seen["failed_chunk"]["error"]
    assert seen["failed_chunk"]["worker"] and seen["failed_chunk"]["attempts"] >= 1
    assert (seen["http_400"], seen["http_404"]) == (400, 404)
    assert 'href="chunks"' in seen["nav"]  # the dashboard's nav bar links the page
    # The screenshot shows both colours over a good part of the map.
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    for state in (DONE, FAILED):
        rgb = [int(STATE_COLOURS[state][i:i + 2], 16) for i in (1, 3, 5)]
        assert (pixels == rgb).all(axis=1).sum() > 2000 * counts[state], state


def test_no_page_without_a_scheduler_in_this_process(tmp_path):
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster.scheduler_address) as client:
        assert client.cluster is None
        assert install_page(client, LiveRun.__new__(LiveRun)) is None


def test_with_tls_the_page_is_served_as_the_dashboard_is(tmp_path):
    """``distributed.scheduler.dashboard.tls.*`` puts the dashboard on https: the page comes with it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    rundir = RunDir(tmp_path / "run").create()
    grid = small_grid()
    with StateStore(rundir.state) as state:
        state.add_chunks((ChunkId(r, c), ("420000",)) for r in range(2) for c in range(2))
        state.record([ChunkResult(ChunkId(0, 1), False, "w", 0.0, 1.0, error="OSError: boom")])
    tls = {"distributed.scheduler.dashboard.tls.cert": str(cert),
           "distributed.scheduler.dashboard.tls.key": str(key)}
    with dask.config.set(tls), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                         dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        url = install_page(client, LiveRun(rundir, rundir.state, grid, "run"))
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"{url}/chunk.json?id=c/0/1", context=context, timeout=30) as resp:
            chunk = json.loads(resp.read())
        with pytest.raises((ConnectionError, urllib.error.URLError)):  # plain http is refused, as for /status
            urllib.request.urlopen(url.replace("https://", "http://") + "/meta.json", timeout=30)
    assert (chunk["state"], chunk["error"], chunk["worker"]) == ("failed", "OSError: boom", "w")
