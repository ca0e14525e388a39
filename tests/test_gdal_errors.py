from __future__ import annotations

import logging
import os

from sinolc_dist.gdal_errors import caught_gdal_errors


def test_libtiff_lines_and_gdal_errors_are_caught_and_other_output_passes(capfd):
    with caught_gdal_errors() as outer:
        os.write(2, b"_tiffWriteProc: No space left on device.\n")
        with caught_gdal_errors() as inner:  # nested (or another thread's) block: one pipe
            os.write(2, b"a worker's own log line\n")
            logging.getLogger("rasterio._env").error("CPLE_FileIO in disk full")
        os.write(2, b"TIFFAppendToStrip: Write error at scanline 256.\n")
    os.write(2, b"_tiffSeekProc: after the block.\n")
    assert sorted(outer) == ["CPLE_FileIO in disk full", "TIFFAppendToStrip: Write error at scanline 256.",
                             "_tiffWriteProc: No space left on device."]
    assert "CPLE_FileIO in disk full" in inner and len(inner) <= 2  # the pipe's lines may come in late,
    assert not [m for m in inner if "scanline" in m]  # but all of a block's before it ends, none after
    err = capfd.readouterr().err
    assert "a worker's own log line\n" in err and "_tiffSeekProc: after the block." in err
    assert "No space left" not in err and "scanline" not in err and "CPLE_FileIO" not in err
