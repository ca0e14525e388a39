"""Pixel rules shared by every source kind: conversion to uint8 with alpha, read errors.

Kept apart from ``warp`` and ``xyz`` so that both use one definition of what a
valid pixel is and of how a failing source is named in a chunk's error.
"""

from __future__ import annotations

import numpy as np

from sinolc_dist.errors import InputError

#: Start of every error a chunk fails with because of one source; :func:`failing_path` reads it back.
UNREADABLE = "unreadable imagery "


class SourceReadError(InputError):
    """A source (file or tile) that cannot be read; the message starts with its path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{UNREADABLE}{path} :: {reason}")
        self.path = path


def failing_path(error: str) -> str | None:
    """The path a chunk error names when a source could not be read, else ``None``."""
    if UNREADABLE not in error:
        return None
    return error.split(UNREADABLE, 1)[1].split(" :: ", 1)[0]


def gdal_reason(exc: BaseException) -> str:
    """GDAL's own message where rasterio hides it behind 'see previous exception'."""
    causes = [str(exc)]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(causes) < 5:
        causes.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(dict.fromkeys(c for c in causes if c))[:300]


def to_uint8(data: np.ndarray, valid: np.ndarray | None, divisor: float) -> np.ndarray:
    """Bands ``(n, h, w)`` of any dtype and a validity mask → ``(n + 1, h, w)`` uint8, alpha last.

    uint8 is kept as is; other integers are floor-divided by ``divisor``, floats
    divided and rounded; both are clipped to 0..255, and non-finite floats are
    invalid.  The alpha band is 255 where valid, 0 elsewhere.
    """
    n, h, w = data.shape
    out = np.empty((n + 1, h, w), np.uint8)
    ok = np.ones((h, w), bool) if valid is None else valid.astype(bool, copy=True)
    if data.dtype == np.uint8:
        out[:n] = data
    else:
        vals = data.astype(np.float32) / np.float32(divisor)
        if np.issubdtype(data.dtype, np.integer):
            np.floor(vals, out=vals)
        else:
            ok &= np.isfinite(vals).all(axis=0)
            np.rint(vals, out=vals)
        out[:n] = np.clip(np.nan_to_num(vals, nan=0.0, posinf=255.0, neginf=0.0), 0, 255)
    out[n] = ok * np.uint8(255)
    return out
