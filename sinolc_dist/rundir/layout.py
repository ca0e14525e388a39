"""The run directory: one folder per job holding everything durable.

Layout::

    <run-dir>/
      run.json        the frozen run configuration (workflow, grid, model, region)
      plan.json       the plan's summary per province (chunks, km², volumes)
      state.sqlite    per-chunk records (plan membership, status, attempts, checksums)
      ingest.sqlite   the same for the ingest stage (imagery → input.zarr)
      input.zarr      imagery on the grid (uint8 bands, 0 = nodata)
      imagery-index.json  the imagery files ingest (or run --imagery) reads
      output.zarr     class codes on the grid (uint8, 0 = nodata)
      mosaics/        one GeoTIFF (COG) per province
      logs/           driver.log and worker logs
      driver.lock     held by the one running driver (host, PID, start time)
      driver.json     the last driver's start and end (see sinolc_dist.stages.lifecycle)

Nothing here knows about models or clusters; it only names paths, freezes the
configuration, guards the single driver and points the driver's log at
``logs/driver.log``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinolc_dist.errors import RunDirError
from sinolc_dist.files import atomic_write_text, make_folders
from sinolc_dist.rundir.config import RunConfig

DEFAULT_RUN_DIR = Path("sinolc-run")


def check_frozen(path: Path, config: dict[str, Any], compatible_keys: frozenset[str]) -> dict[str, Any]:
    """The configuration to record at ``path``, refusing an incompatible change.

    ``config`` itself when nothing is recorded yet, else the frozen one with its
    ``compatible_keys`` updated.  Writes nothing, so callers can check every
    argument before their first write.
    """
    if not path.exists():
        return config
    try:
        frozen = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunDirError(f"{path} is damaged ({exc}); restore it or start a new run directory") from None
    # A setting added since the run began is compatible while it keeps its empty default.
    frozen = {**{k: v for k, v in config.items() if k not in frozen and v in (None, [], {}, False)},
              **frozen}
    diffs = [
        f"{k}: {frozen.get(k)!r} -> {config.get(k)!r}"
        for k in sorted(set(frozen) | set(config))
        if k not in compatible_keys and frozen.get(k) != config.get(k)
    ]
    if diffs:
        raise RunDirError(
            f"run directory {path.parent} was started with another configuration "
            f"({'; '.join(diffs)}); resume with the original settings or use a new --run-dir"
        )
    return {**frozen, **{k: config[k] for k in compatible_keys if k in config}}


def _flock_briefly(fd: int, tries: int = 10, pause_s: float = 0.05) -> None:
    """Take the exclusive lock, waiting up to ``tries × pause_s`` for a passing reader.

    ``status`` probes the lock with a shared ``flock`` held for microseconds
    (:meth:`RunDir.driver_holder`); a driver starting at that instant must not be
    refused.  Raises ``BlockingIOError`` when a driver still holds it.
    """
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(pause_s)


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        """The frozen run configuration."""
        return self.root / "run.json"

    @property
    def plan(self) -> Path:
        """The plan summary."""
        return self.root / "plan.json"

    @property
    def state(self) -> Path:
        """The per-chunk state database."""
        return self.root / "state.sqlite"

    @property
    def imagery_index(self) -> Path:
        """The index of the imagery files (footprints, CRS, bands, dates)."""
        return self.root / "imagery-index.json"

    @property
    def ingest_state(self) -> Path:
        """The ingest stage's per-chunk state (same format as the inference state)."""
        return self.root / "ingest.sqlite"

    @property
    def ingest_config(self) -> Path:
        """The ingest stage's frozen configuration (``ingest.json``)."""
        return self.root / "ingest.json"

    @property
    def input(self) -> Path:
        """The input imagery store."""
        return self.root / "input.zarr"

    @property
    def output(self) -> Path:
        """The output class store."""
        return self.root / "output.zarr"

    @property
    def mosaics(self) -> Path:
        """Folder of provincial GeoTIFFs."""
        return self.root / "mosaics"

    def mosaic(self, adcode: str, name: str) -> Path:
        """A province's COG: ``mosaics/<adcode>_<name>.tif`` (spaces in the name become dashes)."""
        return self.mosaics / f"{adcode}_{name.replace(' ', '-')}.tif"

    @property
    def national_vrt(self) -> Path:
        """The national VRT over the provincial COGs (``mosaics/china.vrt``)."""
        return self.mosaics / "china.vrt"

    @property
    def quicklooks(self) -> Path:
        """Folder of the provincial COGs' PNG quicklooks."""
        return self.mosaics / "quicklooks"

    @property
    def stats(self) -> Path:
        """Folder of the class-area tables (``classes_km2.csv`` / ``.json``)."""
        return self.root / "stats"

    @property
    def tls(self) -> Path:
        """The workers' copies of the run's temporary TLS certificates (``.dask-tls``)."""
        return self.root / ".dask-tls"

    @property
    def logs(self) -> Path:
        """Folder of logs."""
        return self.root / "logs"

    @property
    def worker_logs(self) -> Path:
        """Folder of the workers' own logs (batch jobs' output, local worker processes' lines)."""
        return self.logs / "workers"

    def driver_job_output(self, job_id: str) -> Path:
        """Where a submitted driver job's stdout and stderr go (``logs/driver-<job id>.out``)."""
        return self.logs / f"driver-{job_id}.out"

    def driver_script(self, kind: str) -> Path:
        """The batch script ``sinolc-dist submit`` writes for a ``kind`` scheduler (``driver.<kind>.sh``)."""
        return self.root / f"driver.{kind}.sh"

    @property
    def lock(self) -> Path:
        """The single-driver lock file."""
        return self.root / "driver.lock"

    def create(self) -> RunDir:
        """Make the folders (idempotent)."""
        make_folders((self.root, self.mosaics, self.logs), lambda exc: RunDirError(
            f"cannot create run directory {self.root}: {exc.strerror or exc}; choose a writable --run-dir"))
        return self

    def require(self) -> RunDir:
        """Check that this is an existing run directory (has run.json)."""
        if not self.config.is_file():
            raise RunDirError(
                f"{self.root} is not a run directory (no run.json): give the --run-dir of an "
                "earlier `sinolc-dist run`/`demo`, or start one with `sinolc-dist run`"
            )
        return self

    # ------------------------------------------------------------ frozen config
    def _read_json(self) -> dict[str, Any]:
        """``run.json`` as written by :meth:`freeze`."""
        self.require()
        try:
            return json.loads(self.config.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RunDirError(
                f"{self.config} is damaged ({exc}); restore it or start a new run directory"
            ) from None

    def read_config(self) -> RunConfig:
        """The frozen configuration as a typed :class:`RunConfig` (what every reader of run.json takes)."""
        data = self._read_json()
        try:
            return RunConfig.from_dict(data)
        except RunDirError as exc:
            raise RunDirError(f"{self.config} is damaged ({exc}); restore it or start a new run "
                              "directory") from None

    def freeze(self, config: RunConfig, compatible_keys: frozenset[str]) -> RunConfig:
        """Record the configuration on first use; afterwards refuse incompatible changes.

        Keys in ``compatible_keys`` may change between runs (cluster, retries,
        in-flight bound); any other difference is refused with the differences
        listed.  Returns the configuration in force: the recorded one with those
        keys taken from ``config``.
        """
        merged = check_frozen(self.config, config.to_dict(), compatible_keys)
        if not self.config.exists() or merged != self._read_json():
            atomic_write_text(self.config, json.dumps(merged, indent=2, sort_keys=True))
        return RunConfig.from_dict(merged)

    # ------------------------------------------------------------------- lock
    @contextmanager
    def driver_lock(self) -> Iterator[None]:
        """Hold the single-driver lock for the duration of a run.

        The lock is an ``flock`` on ``driver.lock``: the kernel releases it when the
        driver dies, so a lock left by a dead driver is taken over; a live one is
        refused with its host, PID and start time.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._lock_error(exc) from None
        try:
            try:
                _flock_briefly(fd)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                try:
                    info = json.loads(holder)
                    who = f"host {info['host']}, PID {info['pid']}, started {info['started']}"
                except (ValueError, KeyError):
                    who = "unknown holder"
                raise RunDirError(
                    f"another driver is running on {self.root} ({who}); wait for it, "
                    "stop it, or use another --run-dir"
                ) from None
            info = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            }
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            except OSError as exc:
                raise self._lock_error(exc) from None
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def driver_record(self) -> Path:
        """How the last driver started and ended (``driver.json``, kept by :mod:`~.stages.lifecycle`)."""
        return self.root / "driver.json"

    def driver_holder(self) -> dict[str, Any] | None:
        """The live driver's host, PID and start time; ``None`` when no driver holds the lock.

        Read-only: a shared non-blocking ``flock``, released at once, tells a held
        lock from one a dead driver left (the kernel drops those), so ``status``
        can say whether anything runs without waiting or writing.
        """
        if not self.lock.exists():
            return None
        fd = os.open(self.lock, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return dict(json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace")))
                except ValueError:
                    return {}  # held, but its holder is still writing who it is
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _lock_error(self, exc: OSError) -> RunDirError:
        """The one-line error for a driver lock that cannot be written (full disk, read-only folder)."""
        return RunDirError(
            f"cannot take the driver lock {self.lock}: {exc.strerror or exc}; free space on its file "
            "system or make the run directory writable, then run the same command again "
            "(nothing recorded so far was changed)"
        )


class _DriverLog(logging.FileHandler):
    """``logs/driver.log``, where a line that cannot be written (a full disk) is lost without a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        """Drop the line quietly: the error that stops the driver reaches the console on its own."""


def setup_logging(rundir: RunDir) -> None:
    """Send the driver's log to ``logs/driver.log`` (readable, one line per event).

    A process drives one run directory at a time: the log of a run directory it
    drove before (tests, a notebook) stops receiving lines.
    """
    rundir.logs.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("sinolc_dist")
    target = str((rundir.logs / "driver.log").resolve())
    for old in [h for h in logger.handlers if isinstance(h, _DriverLog) and h.baseFilename != target]:
        logger.removeHandler(old)
        with suppress(OSError):  # its disk may be full: its last buffered line is dropped, as any is
            old.close()
    if not any(getattr(h, "baseFilename", None) == target for h in logger.handlers):
        handler = _DriverLog(target)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
