"""Input and output Zarr (v3) stores laid on the national grid.

Each store is a Zarr group holding one array over the *whole* grid (sparse:
shards are only written where there is data), so the store's pixel
``(row, col)`` is the grid's pixel ``(row, col)`` and chunk ids mean the same
thing everywhere.  Arrays are compressed with Blosc/zstd, stored in
``grid.block`` px inner chunks and ``grid.shard_px`` px shards: one task
writes one whole shard, never part of one.

Georeferencing follows CF conventions so that
``xarray.open_zarr(path, chunks=None, decode_coords="all")`` gives a DataArray
that rioxarray knows (``x``/``y`` coordinates, a ``spatial_ref`` grid mapping
with ``crs_wkt`` and ``GeoTransform``).  Store metadata is written by the
driver alone, before any task runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import Grid, Window

INPUT_ARRAY = "image"
OUTPUT_ARRAY = "classes"
#: Optional output array: top-1 probability of the predicted class, 0..255 (0 = nodata).
CONFIDENCE_ARRAY = "confidence"
_COORD_BLOCK = 1 << 20


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)


def _write_georeference(group: zarr.Group, grid: Grid) -> None:
    """Write x/y centre coordinates and a CF ``spatial_ref`` variable."""
    height, width = grid.size
    t = grid.transform
    crs = grid.pyproj_crs
    geographic = crs.is_geographic
    for name, n, start, step in (("x", width, t.c, t.a), ("y", height, t.f, t.e)):
        arr = group.create_array(
            name, shape=(n,), dtype="float64", chunks=(min(n, _COORD_BLOCK),),
            compressors=_compressor(), dimension_names=(name,), fill_value=np.nan,
            attributes={
                "standard_name": ("longitude" if name == "x" else "latitude")
                if geographic else f"projection_{name}_coordinate",
                "units": "degrees" if geographic else "m",
            },
        )
        for i0 in range(0, n, _COORD_BLOCK):
            i1 = min(n, i0 + _COORD_BLOCK)
            arr[i0:i1] = start + (np.arange(i0, i1, dtype="float64") + 0.5) * step
    cf = crs.to_cf()
    cf["spatial_ref"] = crs.to_wkt()
    cf["GeoTransform"] = " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    ref = group.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0,
                             dimension_names=(), attributes=cf)
    ref[()] = 0


def create_store(
    path: str | Path, grid: Grid, kind: str, bands: int = 3, attrs: dict[str, Any] | None = None,
    confidence: bool = False,
) -> zarr.Array:
    """Create an empty input (``kind="input"``, uint8 bands) or output store.

    The output store holds uint8 class codes with 0 as nodata, and with
    ``confidence`` a ``confidence`` array of the same layout.  Creating a store
    that already exists is an error unless it was made for the same grid, in
    which case the existing array is returned untouched.
    """
    path = Path(path)
    if (path / "zarr.json").exists():
        return open_array(path, grid)
    name = INPUT_ARRAY if kind == "input" else OUTPUT_ARRAY
    shape: tuple[int, ...] = grid.size
    chunks: tuple[int, ...] = (grid.block, grid.block)
    shards: tuple[int, ...] = (grid.shard_px, grid.shard_px)
    dims: tuple[str, ...] = ("y", "x")
    if kind == "input":
        shape, chunks, shards, dims = (bands, *shape), (bands, *chunks), (bands, *shards), ("band", *dims)
    group = zarr.open_group(path, mode="w-", zarr_format=3,
                            attributes={"sinolc_grid": grid.to_dict(), "sinolc_kind": kind,
                                        **(attrs or {})})
    _write_georeference(group, grid)
    if kind == "input":
        band = group.create_array("band", shape=(bands,), dtype="int32", dimension_names=("band",))
        band[:] = np.arange(1, bands + 1, dtype="int32")
    for array_name in (name, CONFIDENCE_ARRAY) if confidence and kind == "output" else (name,):
        group.create_array(
            array_name, shape=shape, dtype="uint8", chunks=chunks, shards=shards,
            compressors=_compressor(), fill_value=0, dimension_names=dims,
            attributes={"grid_mapping": "spatial_ref", "nodata": 0},
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not in the v3 spec"
        zarr.consolidate_metadata(path)
    return open_array(path, grid)


def open_array(path: str | Path, grid: Grid | None = None) -> zarr.Array:
    """Open a store's data array, checking that it was made for ``grid``."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputError(f"Zarr store {path} does not exist: run the stage that creates it first")
    try:
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        kind = group.attrs["sinolc_kind"]
        stored = Grid.from_dict(dict(group.attrs["sinolc_grid"]))
        arr = group[INPUT_ARRAY if kind == "input" else OUTPUT_ARRAY]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"Zarr store {path} is not a sinolc-dist store or is damaged ({exc}); "
            "point to the run directory's input.zarr/output.zarr or recreate it"
        ) from None
    if grid is not None and stored != grid:
        raise InputError(
            f"Zarr store {path} was made for another grid ({stored}) than this run's ({grid}); "
            "use a fresh run directory or the matching workflow"
        )
    return arr


def confidence_array(output_path: str | Path, grid: Grid) -> zarr.Array | None:
    """The output store's ``confidence`` array when the driver created one, else ``None``."""
    # Not from the consolidated metadata: the array may have been added after it was written.
    group = zarr.open_group(output_path, mode="r+", zarr_format=3, use_consolidated=False)
    if CONFIDENCE_ARRAY not in group:
        return None
    arr = group[CONFIDENCE_ARRAY]
    if not isinstance(arr, zarr.Array) or tuple(arr.shape) != tuple(grid.size):
        raise ConfigError(f"{output_path}/{CONFIDENCE_ARRAY} is not a (y, x) array over the grid {grid.size}")
    return arr


def read_window(arr: zarr.Array, window: Window) -> np.ndarray:
    """Read ``(…, rows, cols)`` of an array over a grid window (clipped windows only)."""
    rows, cols = window.slices()
    return np.asarray(arr[..., rows, cols])


def write_window(arr: zarr.Array, window: Window, data: np.ndarray) -> None:
    """Write data over a window; callers give whole shards (one writer per shard)."""
    rows, cols = window.slices()
    arr[..., rows, cols] = data
