"""Atomic writes: a file appears whole under its name or not at all.

Every file a run writes (``run.json``, the plan, statistics, STAC items, maps,
VRTs) is written beside its destination as ``.<name>.<pid>.partial``, synced, then
renamed into place, so a kill or a full disk never leaves half a file under the
real name and never touches what was there before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from sinolc_dist.errors import RunDirError


def partial_path(path: Path) -> Path:
    """Where a file is written before it is renamed to ``path`` (same folder, hidden)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def atomic_write(path: Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call ``write`` on a partial file beside ``path``, then rename it into place.

    On an ``OSError`` the partial file is removed and the error re-raised: the
    caller words it for its own file.
    """
    tmp = partial_path(path)
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; a failure is one :class:`RunDirError` naming the file."""
    try:
        atomic_write(path, lambda f: f.write(text))
    except OSError as exc:
        raise RunDirError(
            f"cannot write {path}: {exc.strerror or exc}; free space or fix permissions "
            "(nothing already written was changed)"
        ) from None
