"""Errors users meet: each says what went wrong and what to do about it.

The CLI prints :class:`SinolcError` messages on one line with no traceback;
anything else is a bug and keeps its traceback.
"""


class SinolcError(Exception):
    """Base of every expected failure: the message names the thing and the fix."""

    exit_code = 2


class ConfigError(SinolcError):
    """A bad argument, configuration value, region or grid."""


class InputError(SinolcError):
    """Missing, unreadable or mismatched input data (imagery, stores, boundaries)."""


class CheckpointError(SinolcError):
    """A model checkpoint that cannot be read or does not fit the architecture."""


class RunDirError(SinolcError):
    """A run directory that is missing, locked by another driver, or incompatible."""


class ChunkFailures(SinolcError):
    """A run finished but some chunks failed; they can be rerun alone.

    ``summary`` carries what the run did, so the CLI can print it before the error.
    """

    exit_code = 1

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


class Interrupted(SinolcError):
    """The driver got SIGINT or SIGTERM: state flushed, worker jobs cancelled; the same command resumes.

    The exit code is the shell's for the signal: 130 (SIGINT), 143 (SIGTERM).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
