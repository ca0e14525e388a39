"""The pixel rules: conversion to uint8 with alpha, and how a source that cannot be read is named."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioError

from sinolc_dist.errors import InputError
from sinolc_dist.imagery.pixels import UNREADABLE, SourceReadError, failing_path, gdal_reason, to_uint8


def test_to_uint8_scaling_and_nan():
    u16 = np.array([[[0, 255, 256, 65535]]], np.uint16)
    assert to_uint8(u16, None, 256.0)[0].tolist() == [[0, 0, 1, 255]]
    assert to_uint8(u16, None, 16.0)[0].tolist() == [[0, 15, 16, 255]]
    f = np.array([[[np.nan, -3.0, 127.5, 300.0]]], np.float32)
    out = to_uint8(f, None, 1.0)
    assert out[0].tolist() == [[0, 0, 128, 255]] and out[1].tolist() == [[0, 255, 255, 255]]


def test_to_uint8_keeps_uint8_and_takes_the_mask_as_alpha():
    data = np.array([[[0, 7], [128, 255]], [[1, 2], [3, 4]]], np.uint8)
    valid = np.array([[True, False], [False, True]])
    out = to_uint8(data, valid, 256.0)  # uint8 is never scaled
    assert out.shape == (3, 2, 2) and out.dtype == np.uint8
    assert np.array_equal(out[:2], data)
    assert out[2].tolist() == [[255, 0], [0, 255]]
    assert valid.tolist() == [[True, False], [False, True]]  # the caller's mask is not modified


def test_to_uint8_float_nan_in_one_band_invalidates_the_pixel():
    f = np.array([[[1.0, 2.0]], [[np.inf, 4.0]], [[5.0, np.nan]]], np.float32)
    out = to_uint8(f, np.array([[True, True]]), 1.0)
    assert out[3].tolist() == [[0, 0]]
    assert out[:3, 0, 0].tolist() == [1, 255, 5]  # +inf is clipped to 255 but the pixel is invalid


def test_source_read_error_names_its_path_for_failing_path():
    err = SourceReadError("/data/a b.tif", "TIFFReadEncodedTile failed :: really")
    assert isinstance(err, InputError) and err.path == "/data/a b.tif"
    assert str(err) == f"{UNREADABLE}/data/a b.tif :: TIFFReadEncodedTile failed :: really"
    assert failing_path(str(err)) == "/data/a b.tif"
    assert failing_path(f"c/0/1: {err}") == "/data/a b.tif"  # as a chunk's error quotes it


@pytest.mark.parametrize("error", ["ValueError: model broke", "", "unreadable imagery"])
def test_failing_path_is_none_for_other_errors(error):
    assert failing_path(error) is None


def test_gdal_reason_follows_the_causes():
    exc = RasterioError("see previous exception")
    exc.__cause__ = OSError("TIFFReadDirectory: truncated")
    assert gdal_reason(exc) == "see previous exception <- TIFFReadDirectory: truncated"
    context = ValueError("outer")
    context.__context__ = KeyError("implicit")  # raised while handling another: the context counts too
    assert gdal_reason(context) == "outer <- 'implicit'"


def test_gdal_reason_drops_repeats_and_bounds_its_length():
    exc: BaseException = ValueError("x" * 400)
    assert gdal_reason(exc) == "x" * 300
    same = RuntimeError("same")
    same.__cause__ = RuntimeError("same")
    assert gdal_reason(same) == "same"
    chain = [RuntimeError(f"e{i}") for i in range(8)]
    for outer, inner in itertools.pairwise(chain):
        outer.__cause__ = inner
    assert gdal_reason(chain[0]) == " <- ".join(f"e{i}" for i in range(5))  # five causes at most


def test_gdal_reason_of_a_real_unreadable_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header with nothing behind it
    with pytest.raises(RasterioError) as err:
        rasterio.open(bad)
    reason = gdal_reason(err.value)
    assert reason and len(reason) <= 300 and "bad.tif" in reason
    assert failing_path(str(SourceReadError(str(bad), reason))) == str(bad)
