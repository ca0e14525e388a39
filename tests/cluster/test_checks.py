"""The value checks every scheduler's profile shares: each failure names the key and quotes the value."""

from __future__ import annotations

import pytest

from sinolc_dist.cluster.checks import (
    check_integers,
    check_lists,
    check_strings,
    is_int,
    size_bytes,
    unknown_keys,
)
from sinolc_dist.errors import ConfigError


def test_a_yaml_true_is_not_an_integer():
    assert is_int(3) and not is_int(True) and not is_int(2.0) and not is_int("3")


@pytest.mark.parametrize(("value", "size"), [("64GB", 64e9), ("2GiB", 2 * 2**30), (2048, 2048), ("lots", -1)])
def test_sizes_are_read_in_bytes(value, size):
    assert size_bytes(value) == size


def test_integers_below_their_bound_or_of_another_type_are_refused():
    check_integers({"cores": 2, "processes": None}, (("cores", 1), ("processes", 1)))
    with pytest.raises(ConfigError, match=r"^cluster profile key 'cores' must be an integer >= 1 \(got 0\)$"):
        check_integers({"cores": 0}, (("cores", 1),))
    with pytest.raises(ConfigError, match=r"'n_workers' must be an integer >= 1 \(got 'two'\)"):
        check_integers({"n_workers": "two"}, (("n_workers", 1),))


def test_strings_and_lists_must_be_what_yaml_was_meant_to_read():
    check_strings({"queue": "gpu", "account": None})
    with pytest.raises(ConfigError, match=r"'queue' must be a string \(quote it in the YAML\) \(got 123\)"):
        check_strings({"queue": 123})
    check_lists({"job_extra_directives": ["--gres=gpu:1"]})
    with pytest.raises(ConfigError, match="'worker_extra_args' must be a list of strings"):
        check_lists({"worker_extra_args": "--resources GPU=1"})


def test_unknown_keys_name_the_valid_ones_and_a_renamed_keys_new_name():
    unknown_keys({"queue": "a"}, {"queue", "account"}, "slurm")
    with pytest.raises(ConfigError) as err:
        unknown_keys({"queu": "a", "project": "p"}, {"queue", "account"}, "slurm", {"project": "account"})
    text = str(err.value)
    assert "unknown key(s) ['project', 'queu'] in the slurm cluster profile" in text
    assert "'project' is now 'account'" in text and text.endswith("valid keys: account, queue")
