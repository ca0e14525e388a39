"""Checks of a cluster profile's values that every scheduler shares: integers, sizes, strings, lists.

Each failure is a :class:`ConfigError` naming the key and quoting its value, so
that a mistake in a profile fails before anything starts.
"""

from __future__ import annotations

from typing import Any

from dask.utils import parse_bytes

from sinolc_dist.errors import ConfigError

#: Keys whose value is a string (a number or a list there is a mistake: an unquoted value in YAML).
STRINGS = {"queue", "account", "project", "interface", "host", "dashboard_address", "job_name",
           "log_directory", "local_directory", "python", "resource_spec", "job_mem", "config_name",
           "shebang"}
#: Keys whose value is a list of strings.
LISTS = ("worker_extra_args", "job_extra_directives", "job_script_prologue", "job_directives_skip")


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (a YAML ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def size_bytes(value: object) -> int:
    """Bytes in a size such as ``'64GB'`` or ``2048``; ``-1`` where it does not parse."""
    try:
        return int(parse_bytes(str(value)))
    except ValueError:
        return -1


def bad(settings: dict[str, Any], key: str, why: str) -> ConfigError:
    """The error for a profile key whose value is wrong: the key, why, and the value as given."""
    return ConfigError(f"cluster profile key {key!r} {why} (got {settings[key]!r})")


def check_integers(settings: dict[str, Any], lows: tuple[tuple[str, int], ...]) -> None:
    """Refuse a key of ``lows`` that is set but is not an integer of at least its lower bound."""
    for key, low in lows:
        if settings.get(key) is not None and (not is_int(settings[key]) or settings[key] < low):
            raise bad(settings, key, f"must be an integer >= {low}")


def check_strings(settings: dict[str, Any]) -> None:
    """Refuse a value of a string key (:data:`STRINGS`) that YAML read as something else."""
    for key in sorted(STRINGS & set(settings)):
        if settings[key] is not None and not isinstance(settings[key], str):
            raise bad(settings, key, "must be a string (quote it in the YAML)")


def check_lists(settings: dict[str, Any]) -> None:
    """Refuse a value of a list key (:data:`LISTS`) that is not a list of strings."""
    for key in LISTS:
        value = settings.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            raise bad(settings, key, "must be a list of strings")


def unknown_keys(settings: dict[str, Any], valid: set[str], kind: str,
                 renamed: dict[str, str] | None = None) -> None:
    """Refuse keys a ``kind`` profile may not hold, naming a renamed key's new name and the valid keys."""
    unknown = set(settings) - valid
    if unknown:
        now = {k: (renamed or {})[k] for k in unknown if k in (renamed or {})}
        hint = "".join(f"; {old!r} is now {new!r}" for old, new in sorted(now.items()))
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in the {kind} cluster profile{hint}; "
                          f"valid keys: {', '.join(sorted(valid))}")
