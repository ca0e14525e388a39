"""Expected failures carry the exit code the CLI ends with; anything else is a bug."""

from __future__ import annotations

import signal

import pytest

from sinolc_dist.errors import (
    CheckpointError,
    ChunkFailures,
    ConfigError,
    InputError,
    Interrupted,
    RunDirError,
    SinolcError,
)


@pytest.mark.parametrize("cls", [ConfigError, InputError, CheckpointError, RunDirError])
def test_a_users_mistake_ends_with_exit_code_2(cls):
    err = cls("bad thing: do this")
    assert isinstance(err, SinolcError) and err.exit_code == 2 and str(err) == "bad thing: do this"


def test_failed_chunks_end_with_1_and_carry_the_runs_summary():
    summary = {"done": 10}
    err = ChunkFailures("2 chunks failed", summary)
    assert err.exit_code == 1 and err.summary is summary


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_ends_with_the_shells_code_for_its_signal(signum, code):
    assert Interrupted("interrupted", signum).exit_code == code
