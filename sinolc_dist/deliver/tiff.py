"""A TIFF's tile index read and patched in place: the image file directories (IFDs) of a tiled TIFF.

:mod:`sinolc_dist.deliver.tiled` has GDAL write a COG with every tile empty (its
header, tags, colour table, geokeys and ghost header exactly as GDAL writes
them), then fills in the tiles itself: it needs where each level's
``TileOffsets`` (tag 324) and ``TileByteCounts`` (tag 325) arrays lie in the
file, and to overwrite them there with the offsets and sizes of the tiles it
appends.  Classic TIFF (magic 42, 12-byte entries, 32-bit offsets) and BigTIFF
(magic 43, 20-byte entries, 64-bit offsets) in either byte order; arrays of
``SHORT``, ``LONG`` or ``LONG8``, held in the entry itself when they fit there.
Only what a tiled single-band image needs is read: sizes, tile sizes and the tile arrays.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sinolc_dist.errors import InputError

_WIDTH, _HEIGHT, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS = 256, 257, 322, 323, 324, 325
#: TIFF field types read here: SHORT, LONG, LONG8, and their byte sizes.
_TYPES = {3: "u2", 4: "u4", 16: "u8"}


@dataclass(frozen=True)
class TileArray:
    """Where one IFD's tile offsets or byte counts lie in the file, and their type."""

    position: int
    count: int
    dtype: np.dtype

    def read(self, f: BinaryIO) -> np.ndarray:
        """The array's values, as int64."""
        f.seek(self.position)
        return np.frombuffer(f.read(self.count * self.dtype.itemsize), self.dtype).astype(np.int64)

    def write(self, f: BinaryIO, values: np.ndarray) -> None:
        """Overwrite the array in place with ``values`` (same count; each must fit the TIFF type)."""
        values = np.asarray(values, dtype=np.int64)
        if values.shape != (self.count,):
            raise ValueError(f"{values.shape[0] if values.ndim else 1} values for an array of {self.count}")
        if values.size and (values.min() < 0 or values.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"tile offsets up to {values.max()} do not fit the file's {self.dtype} array")
        f.seek(self.position)
        f.write(values.astype(self.dtype).tobytes())


@dataclass(frozen=True)
class Ifd:
    """One image level of a tiled TIFF: its size, tile size, and tile arrays."""

    width: int
    height: int
    tile: tuple[int, int]
    offsets: TileArray
    counts: TileArray

    @property
    def tiles_across(self) -> int:
        """Tiles per row."""
        return -(-self.width // self.tile[0])

    @property
    def tiles_down(self) -> int:
        """Rows of tiles."""
        return -(-self.height // self.tile[1])


def read_ifds(path: Path) -> list[Ifd]:
    """Every IFD of a tiled TIFF or BigTIFF, in file order (the full image first in a COG).

    Raises:
        InputError: The file is not a TIFF, or an IFD lacks the tile tags (a striped TIFF).

    """
    with open(path, "rb") as f:
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        magic = struct.unpack(f"{order}H", head[2:4])[0] if order else 0
        if magic not in (42, 43):
            raise InputError(f"{path} is not a TIFF file (header {head[:4]!r}): give a GeoTIFF")
        big = magic == 43
        entry, n_fmt, off_fmt = (20, "Q", "Q") if big else (12, "H", "I")
        next_ifd = struct.unpack(f"{order}{off_fmt}", head[8:16] if big else head[4:8])[0]
        ifds = []
        while next_ifd:
            f.seek(next_ifd)
            size = struct.calcsize(n_fmt)
            (n,) = struct.unpack(f"{order}{n_fmt}", f.read(size))
            raw = f.read(n * entry + struct.calcsize(off_fmt))
            tags = {_tag_of(raw[i * entry:(i + 1) * entry], order, big, next_ifd + size + i * entry)
                    for i in range(n)}
            ifds.append(_ifd(path, dict(tags), f, order))
            (next_ifd,) = struct.unpack(f"{order}{off_fmt}", raw[n * entry:])
    return ifds


def _tag_of(raw: bytes, order: str, big: bool, at: int) -> tuple[int, TileArray | None]:
    """One IFD entry: its tag, and where its values lie (``None`` for a type not read here)."""
    tag, kind = struct.unpack(f"{order}HH", raw[:4])
    count, value = struct.unpack(f"{order}QQ" if big else f"{order}II", raw[4:])
    if kind not in _TYPES:
        return tag, None
    dtype = np.dtype(_TYPES[kind]).newbyteorder(order)
    inline = count * dtype.itemsize <= (8 if big else 4)
    return tag, TileArray(at + (12 if big else 8) if inline else value, count, dtype)


def _ifd(path: Path, tags: dict[int, TileArray | None], f: BinaryIO, order: str) -> Ifd:
    """An :class:`Ifd` from its entries; a missing tile tag is an :class:`InputError`."""
    needed = (_WIDTH, _HEIGHT, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS)
    missing = [t for t in needed if tags.get(t) is None]
    if missing:
        raise InputError(f"{path} is not a tiled TIFF (no tag {missing[0]}): write it with TILED=YES")

    def scalar(tag: int) -> int:
        array = tags[tag]
        assert array is not None
        return int(array.read(f)[0])

    offsets, counts = tags[_TILE_OFFSETS], tags[_TILE_COUNTS]
    assert offsets is not None and counts is not None
    return Ifd(scalar(_WIDTH), scalar(_HEIGHT), (scalar(_TILE_WIDTH), scalar(_TILE_LENGTH)), offsets, counts)
