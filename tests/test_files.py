"""Atomic writes: a destination is either whole and new, or exactly as it was; no partial file stays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinolc_dist.errors import InputError, RunDirError
from sinolc_dist.files import (
    atomic_write,
    atomic_write_text,
    make_folders,
    partial_path,
    replacing,
    writable_folder,
)


def _fail_midway(f) -> None:
    f.write("half of the new ")
    f.flush()
    raise OSError(28, "No space left on device")


def _gdal_like_write_that_fails(dst: Path) -> None:
    """Write by name as GDAL does (the file and side files named after it), then fail."""
    with replacing(dst, ".tif") as tmp:
        assert tmp.parent == dst.parent and tmp.suffix == ".tif"
        tmp.write_bytes(b"half a COG")
        Path(f"{tmp}.ovr.tmp").write_bytes(b"overviews")
        tmp.with_suffix(".aux.xml").write_text("<PAMDataset/>")
        raise RuntimeError("rejected")


def test_partial_path_is_hidden_beside_the_destination(tmp_path):
    dst = tmp_path / "plan.json"
    assert partial_path(dst) == tmp_path / f".plan.json.{os.getpid()}.partial"
    assert partial_path(dst, ".tif").name == f".plan.json.{os.getpid()}.partial.tif"


def test_a_write_replaces_the_destination_whole(tmp_path):
    dst = tmp_path / "run.json"
    dst.write_text("old", encoding="utf-8")
    atomic_write_text(dst, "new ✓")
    assert dst.read_text(encoding="utf-8") == "new ✓"
    atomic_write(dst, lambda f: f.write(b"\x00\x01"), binary=True)
    assert dst.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


@pytest.mark.parametrize("before", [None, "previous content"])
def test_a_write_failing_midway_leaves_the_destination_and_no_partial(tmp_path, before):
    dst = tmp_path / "stats.csv"
    if before is not None:
        dst.write_text(before, encoding="utf-8")
    with pytest.raises(OSError, match="No space left"):
        atomic_write(dst, _fail_midway)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if before is None else ["stats.csv"])
    if before is not None:
        assert dst.read_text(encoding="utf-8") == before


def test_text_write_failure_is_one_run_dir_error_naming_the_file(tmp_path):
    dst = tmp_path / "missing" / "plan.json"
    with pytest.raises(RunDirError, match=r"cannot write .*plan\.json: .*nothing already written"):
        atomic_write_text(dst, "{}")
    assert list(tmp_path.iterdir()) == []


def test_replacing_removes_the_partial_and_its_side_files_on_any_error(tmp_path):
    dst = tmp_path / "a[1].tif"  # glob characters in the name: only its own leftovers go
    dst.write_bytes(b"previous mosaic")
    other = tmp_path / f".a[1].tif.{os.getpid() + 1}.partial.tif"  # another process's write
    other.write_bytes(b"theirs")
    with pytest.raises(RuntimeError, match="rejected"):
        _gdal_like_write_that_fails(dst)
    assert dst.read_bytes() == b"previous mosaic"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, other.name])


def test_replacing_renames_into_place_only_when_the_block_ends(tmp_path):
    dst = tmp_path / "p.tif"
    with replacing(dst, ".tif") as tmp:
        tmp.write_bytes(b"whole")
        assert not dst.exists()
    assert dst.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["p.tif"]


def test_writable_folder_is_made_or_refused_before_a_write(tmp_path):
    assert writable_folder(tmp_path / "a" / "b", "destination") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(InputError, match=r"cannot create the scratch folder .*taken"):
        writable_folder(tmp_path / "taken" / "x", "scratch")


def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user may write to read-only folders (root)")
        with pytest.raises(InputError, match=r"destination folder .*ro is not writable"):
            writable_folder(locked, "destination")
    finally:
        locked.chmod(0o755)


def test_a_folder_that_cannot_be_made_is_the_callers_one_line_error(tmp_path):
    (tmp_path / "file").write_text("in the way")
    make_folders([tmp_path / "a" / "b"], lambda exc: AssertionError("unused"))
    assert (tmp_path / "a" / "b").is_dir()
    with pytest.raises(InputError, match=r"^no folder here: Not a directory$") as err:
        make_folders([tmp_path / "ok", tmp_path / "file" / "sub"],
                     lambda exc: InputError(f"no folder here: {exc.strerror}"))
    assert err.value.__cause__ is None and err.value.__suppress_context__
