"""Atomic writes: a file appears whole under its name or not at all.

Every file a run writes (``run.json``, the plan, statistics, STAC items, maps,
VRTs, the provincial COGs) is written beside its destination as
``.<name>.<pid>.partial``, then renamed into place, so a kill or a full disk
never leaves half a file under the real name and never touches what was there
before.  :func:`replacing` serves writers that take a file name (GDAL's);
:func:`atomic_write` and :func:`atomic_write_text` those that take an open file,
which they also sync before the rename.  :func:`writable_folder` checks a
destination before a long write starts.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sinolc_dist.errors import InputError, RunDirError


def partial_path(path: Path, suffix: str = "") -> Path:
    """Where a file is written before it is renamed to ``path`` (same folder, hidden).

    ``suffix`` ends the name, for a writer that goes by the extension (``.tif``).
    """
    return path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")


@contextmanager
def replacing(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield the partial path for ``path``; rename it into place when the block ends normally.

    Whatever the block raises, ``path`` is left as it was, and the partial file
    is removed, with any side file a writer made beside it under its name (GDAL's
    ``.ovr.tmp``, ``.aux.xml``); the exception propagates for the caller to word.
    """
    tmp = partial_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        for leftover in tmp.parent.glob(f"{glob.escape(partial_path(path).name)}*"):
            leftover.unlink(missing_ok=True)


def make_folders(folders: Iterable[Path], error: Callable[[OSError], Exception]) -> None:
    """Create each folder with its parents (existing ones are fine).

    The first failure is raised as ``error(exc)``, the caller's one-line error
    naming its folder and fix, without the ``OSError``'s traceback.
    """
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(exc) from None


def writable_folder(folder: Path, what: str) -> Path:
    """Create ``folder`` if needed and check that files can be made in it; returns it.

    ``what`` names the folder in the :class:`InputError` (``destination``,
    ``scratch``), so a writer fails before it starts, not half-way.
    """
    make_folders([folder], lambda exc: InputError(
        f"cannot create the {what} folder {folder} ({exc.strerror}): "
        "choose another path or fix its parent's permissions"))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"the {what} folder {folder} is not writable: make it writable "
            "(chmod u+wx) or choose another folder"
        )
    return folder


def atomic_write(path: Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call ``write`` on a partial file beside ``path``, sync it, then rename it into place.

    On an error the partial file is removed and the error re-raised (an
    ``OSError``: the caller words it for its own file).
    """
    with replacing(path) as tmp, \
            open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; a failure is one :class:`RunDirError` naming the file."""
    try:
        atomic_write(path, lambda f: f.write(text))
    except OSError as exc:
        raise RunDirError(
            f"cannot write {path}: {exc.strerror or exc}; free space or fix permissions "
            "(nothing already written was changed)"
        ) from None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 8 MiB pieces: checkpoints, and COGs of 100 GB."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(8 << 20):
            digest.update(piece)
    return digest.hexdigest()
