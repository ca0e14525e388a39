"""Configuration values checked against their field's annotation, the error naming file and key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from sinolc_dist.config_types import check_types, describe, field_types, matches
from sinolc_dist.errors import ConfigError


@pytest.mark.parametrize(("value", "hint", "fits"), [
    (3, int, True), ("two", int, False), (True, int, False), (2, float, True), (2.5, int, False),
    (None, int | None, True), ("x", int | None, False), ([1, 2], tuple[int, ...], True),
    ([1, "a"], tuple[int, ...], False), ([1, 2], tuple[int, int], True), ([1], tuple[int, int], False),
    ({"a": 1}, Mapping, True), ([1], dict[str, int], False), (False, bool, True), (0, bool, False),
])
def test_a_value_fits_its_annotation_as_yaml_reads_it(value, hint, fits):
    assert matches(value, hint) is fits


@pytest.mark.parametrize(("hint", "words"), [
    (int, "an integer"), (int | None, "an integer (or nothing)"), (tuple[int, ...], "a list of integers"),
    (tuple[float, float], "a list of 2 numbers"), (dict[str, int], "a mapping of KEY: VALUE"),
    (bool | str, "true or false or a string"),
])
def test_an_annotation_is_described_in_words(hint, words):
    assert describe(hint) == words


@dataclass
class _Run:
    retries: int = 2
    order: str = "province"


def test_the_first_wrong_value_is_one_error_naming_file_section_and_key():
    hints = field_types(_Run)
    check_types("wf.yaml", "run", {"retries": 3, "unknown": object()}, hints)  # keys without a hint pass
    with pytest.raises(ConfigError) as err:
        check_types("wf.yaml", "run", {"retries": "two"}, hints)
    assert str(err.value) == "wf.yaml: run.retries: expected an integer, got 'two'"
    with pytest.raises(ConfigError, match=r"^p.yaml: order: expected a string, got 4$"):
        check_types("p.yaml", "", {"order": 4}, hints)


def test_a_replaced_hint_takes_precedence_over_the_annotation():
    hints = field_types(_Run, order=tuple[str, ...])
    check_types("wf.yaml", "run", {"order": ["11", "42"]}, hints)
    with pytest.raises(ConfigError, match="expected a list of strings"):
        check_types("wf.yaml", "run", {"order": "11"}, hints)
