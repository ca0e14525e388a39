"""``sinolc-dist audit`` and ``repair`` as users meet them: exit codes, tables, JSON, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from sinolc_dist.cli import main
from tests.audit.synthetic import duplicate, land_cover, write_map


def sinolc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sinolc_dist.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point in this process (faster than a subprocess for the error paths)."""
    monkeypatch.setattr(sys, "argv", ["sinolc-dist", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.fixture(scope="module")
def original() -> np.ndarray:
    return land_cover(900, 1000, 6)


def test_audit_then_repair_from_the_command_line(tmp_path, original):
    image = duplicate(duplicate(original, 1, 600, 300, 0.02), 0, 500, 268, 0.02)
    write_map(tmp_path / "m.tif", image, rat=True)
    found = sinolc("audit", str(tmp_path / "m.tif"), "--json", "--map", str(tmp_path / "m.png"))
    assert found.returncode == 1, found.stderr  # findings: exit 1, as a linter
    report = json.loads(found.stdout)[0]
    assert [(s["axis"], s["start"], s["width"]) for s in report["strips"]] == [("columns", 600, 300),
                                                                              ("rows", 500, 268)]
    assert (tmp_path / "m.png").exists()
    fixed = sinolc("repair", str(tmp_path / "m.tif"), str(tmp_path / "fixed.tif"))
    assert fixed.returncode == 0, fixed.stderr
    assert "removed columns [600, 900), rows [500, 768)" in " ".join(fixed.stdout.split())
    with rasterio.open(tmp_path / "fixed.tif") as dst:
        assert np.array_equal(dst.read(1), original)
    clean = sinolc("audit", str(tmp_path / "fixed.tif"))
    assert clean.returncode == 0, clean.stderr
    assert "clean" in clean.stdout


def test_the_table_and_a_hand_given_strip(monkeypatch, capsys, tmp_path, original):
    write_map(tmp_path / "m.tif", duplicate(original, 1, 500, 64))
    write_map(tmp_path / "n.tif", duplicate(original, 1, 500, 64))
    code, out, _ = in_process(monkeypatch, capsys, "audit", str(tmp_path / "m.tif"), str(tmp_path / "n.tif"),
                              "--map", str(tmp_path / "map.png"))
    assert code == 1 and out.count("[500, 564)") == 2
    assert (tmp_path / "map-m.png").exists() and (tmp_path / "map-n.png").exists()  # a map per file
    code, out, _ = in_process(monkeypatch, capsys, "repair", str(tmp_path / "m.tif"), str(tmp_path / "f.tif"),
                              "--strip", "cols:500:564", "--format", "gtiff", "--json")
    assert code == 0 and json.loads(out)["format"] == "gtiff"
    code, out, _ = in_process(monkeypatch, capsys, "repair", str(tmp_path / "f.tif"), str(tmp_path / "g.tif"))
    assert code == 0 and "nothing to repair" in out and not (tmp_path / "g.tif").exists()


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0]


def test_files_audit_cannot_take_are_one_line_errors(monkeypatch, capsys, tmp_path):
    write_map(tmp_path / "rgb.tif", np.ones((3, 64, 64), np.uint8), count=3)
    write_map(tmp_path / "ndvi.tif", np.zeros((64, 64), np.float32), nodata=None)
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8") as dst:
        dst.write(np.ones((1, 64, 64), np.uint8))
    (tmp_path / "notes.tif").write_text("not a raster")
    refused = {"rgb.tif": ("has 3 bands", "-b N"), "ndvi.tif": ("float32", "integer class map"),
               "nocrs.tif": ("has no CRS", "-a_srs"), "notes.tif": ("cannot read", "GDAL opens")}
    for name, needles in refused.items():
        one_line_error(*in_process(monkeypatch, capsys, "audit", str(tmp_path / name))[::2], name, *needles)
        one_line_error(*in_process(monkeypatch, capsys, "repair", str(tmp_path / name),
                                   str(tmp_path / "out.tif"))[::2], name)


def test_bad_strips_and_outputs_are_one_line_errors(monkeypatch, capsys, tmp_path, original):
    write_map(tmp_path / "m.tif", original)
    src = str(tmp_path / "m.tif")
    one_line_error(*in_process(monkeypatch, capsys, "repair", src, str(tmp_path / "f.tif"),
                               "--strip", "rows:850:950")[::2], "lies outside", "900 rows")
    one_line_error(*in_process(monkeypatch, capsys, "repair", src, str(tmp_path / "f.tif"),
                               "--strip", "rows:9")[::2], "rows:START:END")
    (tmp_path / "taken").write_text("a file")
    one_line_error(*in_process(monkeypatch, capsys, "repair", src, str(tmp_path / "taken" / "f.tif"),
                               "--strip", "rows:0:10")[::2], "cannot create the output folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "taken"]
