"""The command line as users meet it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def sinolc(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sinolc_dist.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ")
    text = " ".join(lines)
    for needle in needles:
        assert needle in text


def test_help_explains_commands():
    proc = sinolc("--help")
    assert proc.returncode == 0
    for command in ("demo", "plan", "run", "status", "rerun", "mosaic"):
        assert command in proc.stdout


def test_unknown_region(tmp_path):
    proc = sinolc("run", "--region", "Hubie", "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown region 'Hubie'", "did you mean Hubei")
    assert not (tmp_path / "r").exists()  # nothing written for a bad argument


def test_missing_run_dir(tmp_path):
    proc = sinolc("status", "--run-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(proc, "not a run directory", "--run-dir")


@pytest.mark.parametrize("content", [b"", b"not a torch file at all"])
def test_unreadable_checkpoint(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    proc = sinolc("run", "--region", "湖北", "--checkpoint", str(bad), "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, f"checkpoint {bad} cannot be read")


def test_missing_checkpoint(tmp_path):
    proc = sinolc("run", "--region", "湖北", "--checkpoint", str(tmp_path / "none.pt"),
                  "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "does not exist")


def test_plan_json_for_a_province(tmp_path):
    proc = sinolc("plan", "--region", "420000", "--json", "--run-dir", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    import json

    plan = json.loads(proc.stdout)
    assert plan["total"]["chunks"] > 10000
    assert (tmp_path / "p" / "plan.json").is_file()
    assert (tmp_path / "p" / "state.sqlite").is_file()
