"""GDAL's and libtiff's error messages, caught while a GeoTIFF is written.

Two routes reach the user's screen, one line per failed call (dozens on a full
disk) before any exception: GDAL's errors, which rasterio logs on the logger
``rasterio._env``, and I/O errors of the libtiff inside rasterio's wheels,
which it prints on the process's stderr from C (``_tiffWriteProc: No space
left on device.``) without telling GDAL, so that GDAL may even finish a COG
whose tiles were never written.  :func:`caught_gdal_errors` holds both for
the duration of a block: a filter keeps rasterio's error records, and file
descriptor 2 points at a pipe whose libtiff lines are kept while every other
line goes on to the real stderr (a worker's own logging is not lost).
:func:`write_failure` turns what was caught into one clear error.

Process-wide (file descriptor 2 and loggers are): nested or concurrent blocks
share one pipe and filter, and each block sees every message caught while it runs.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zarr

from sinolc_dist.errors import InputError
from sinolc_dist.grid import Window

#: Disk a COG needs while it is written, in multiples of the output store's bytes for its window.
_SPACE_FACTOR = 3
#: libtiff's default error and warning lines: ``<module>: <message>.`` from a libtiff function.
_LIBTIFF = re.compile(rb"^(_tiff\w+|TIFF\w+|tif_\w+): ")

#: The logger rasterio sends GDAL's messages to.
_RASTERIO = logging.getLogger("rasterio._env")

#: Written by a block as it ends; the reader signals when it reaches it (all earlier lines handed out).
_MARK = b"\x00sinolc-gdal-errors-drained "

_lock = threading.Lock()  # held while the pipe is set up or taken down
_lines_lock = threading.Lock()  # held while a message is handed to the listeners
_listeners: list[list[str]] = []
_saved_fd: int | None = None
_reader: threading.Thread | None = None
_drained: dict[bytes, threading.Event] = {}


def _hand_out(text: str) -> None:
    """Give one caught message to every block running now."""
    with _lines_lock:
        for listener in _listeners:
            listener.append(text)


def _forward(read_fd: int, saved_fd: int) -> None:
    """Read the pipe line by line: libtiff's lines to the listeners, the rest to the real stderr."""
    with os.fdopen(read_fd, "rb") as pipe:
        for line in pipe:
            if line.startswith(_MARK):
                if (event := _drained.get(line[len(_MARK):].strip())) is not None:
                    event.set()
            elif _LIBTIFF.match(line):
                _hand_out(line.decode("utf-8", "replace").strip())
            else:
                os.write(saved_fd, line)


def _keep_errors(record: logging.LogRecord) -> bool:
    """Logger filter: hand GDAL's errors to the listeners (and drop them); let the rest through."""
    if record.levelno < logging.ERROR:
        return True
    _hand_out(record.getMessage())
    return False


@contextmanager
def caught_gdal_errors() -> Iterator[list[str]]:
    """Catch GDAL's and libtiff's error messages while the block runs; yields the list they go to.

    Why: a full disk must end in one error line naming the file, not a screen of
    C-level messages, and the caller must learn that a write failed even when
    GDAL did not say so.
    """
    global _saved_fd, _reader
    caught: list[str] = []
    with _lock:
        if not _listeners:
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            _saved_fd = os.dup(2)
            os.dup2(write_fd, 2)
            os.close(write_fd)
            _reader = threading.Thread(target=_forward, args=(read_fd, _saved_fd), daemon=True,
                                       name="libtiff-stderr")
            _reader.start()
            _RASTERIO.addFilter(_keep_errors)
        with _lines_lock:
            _listeners.append(caught)
    try:
        yield caught
    finally:
        token = str(id(caught)).encode()
        _drained[token] = threading.Event()
        sys.stderr.flush()
        os.write(2, _MARK + token + b"\n")
        _drained[token].wait(timeout=5)  # every line printed in the block has reached ``caught``
        del _drained[token]
        with _lock:
            if len(_listeners) == 1 and _saved_fd is not None and _reader is not None:
                _RASTERIO.removeFilter(_keep_errors)
                sys.stderr.flush()
                os.dup2(_saved_fd, 2)  # closes the pipe's last write end: the reader drains and ends
                _reader.join(timeout=5)
                os.close(_saved_fd)
                _saved_fd, _reader = None, None
            with _lines_lock:
                _listeners[:] = [x for x in _listeners if x is not caught]  # lists equal in content differ


def write_failure(dst: Path, exc: BaseException, caught: list[str], classes: zarr.Array, window: Window,
                 folders: tuple[Path, Path]) -> InputError:
    """The one-line error for a COG that could not be written (a full disk, an I/O error).

    It names the file, the first message caught, the free space of ``folders``
    and roughly what the file needs (:func:`_stored_bytes`), so the user knows
    how much to free.
    """
    if caught:  # libtiff's function name ("_tiffWriteProc: ") says nothing to the user
        more = len(caught) - 1
        first = _LIBTIFF.sub(b"", caught[0].encode()).decode()
        detail = first.rstrip(".") + (f", and {more} more GDAL message(s)" if more else "")
    else:
        detail = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
    free = ", ".join(f"{f} has {_size(shutil.disk_usage(f).free)} free" for f in dict.fromkeys(folders))
    stored = _stored_bytes(classes, window)
    need = f"; the file needs roughly {_size(_SPACE_FACTOR * stored)} there" if stored else ""
    return InputError(
        f"writing {dst} failed ({detail}; {free}{need}); nothing was left under that name: "
        "free space or fix access there, then rerun the mosaic"
    )


def _size(n: int) -> str:
    """Bytes for a person: KiB below a tenth of a MiB, else MiB with one decimal."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 // 10 else f"{n / 2**10:.0f} KiB"


def _stored_bytes(classes: zarr.Array, window: Window) -> int:
    """Bytes the output store holds for the shards a window touches (0 when not a local store).

    The COG compresses about as well as the store, and the staging file, its
    overviews and the COG exist at once: about :data:`_SPACE_FACTOR` times this.
    """
    root = getattr(getattr(classes, "store", None), "root", None)
    if root is None:
        return 0
    rows, cols = classes.shards or classes.chunks
    encode = classes.metadata.chunk_key_encoding.encode_chunk_key
    total = 0
    for i in range(window.row0 // rows, -(-window.row1 // rows)):
        for j in range(window.col0 // cols, -(-window.col1 // cols)):
            path = Path(root) / classes.path / encode((i, j))
            total += path.stat().st_size if path.exists() else 0
    return total
