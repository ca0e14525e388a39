from __future__ import annotations

import json

import pytest
import yaml

from sinolc_dist.errors import ConfigError
from sinolc_dist.legend import CHESAPEAKE, SINOLC, Legend, load_legend


def write(tmp_path, doc) -> str:
    path = tmp_path / "legend.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_a_legend_file_reads_back_and_round_trips(tmp_path):
    legend = load_legend(write(tmp_path, {"name": "mine", "channels": ["drop", 2, 1], "classes": {
        1: {"name": "Water", "color": [0, 90, 200]}, 2: {"name": "Forest", "color": "#228b22"}}}))
    assert legend.name == "mine" and legend.codes == (1, 2) and legend.channels == (None, 2, 1)
    assert legend.colours() == {1: (0, 90, 200), 2: (34, 139, 34)}
    assert legend.colormap()[0] == (0, 0, 0, 0) and legend.colormap()[2] == (34, 139, 34, 255)
    assert legend.name_of(2) == "Forest" and legend.name_of(0) == "No data" and legend.name_of(7) == "code 7"
    assert Legend.from_dict(legend.to_dict()) == legend
    # As run.json holds it (keys sorted as text): the classes still come back in code order.
    assert Legend.from_dict(json.loads(json.dumps(SINOLC.to_dict(), sort_keys=True))) == SINOLC


def test_shipped_legends():
    assert SINOLC.codes == tuple(range(1, 12)) and SINOLC.channels == SINOLC.codes
    assert len(CHESAPEAKE.channels) == 17 and CHESAPEAKE.channels[0] is None
    assert CHESAPEAKE.colours()[95] == (108, 159, 184)


@pytest.mark.parametrize(("doc", "message"), [
    ({"name": "x"}, r"'classes' must map codes to \{name, color\}"),
    ({"classes": {1: {"color": [1, 2, 3]}}}, r"class 1 needs a 'name'"),
    ({"classes": {1: {"name": "a", "color": [1, 2, 300]}}},
     r"colour of class 1 must be \[r, g, b\] in 0\.\.255"),
    ({"classes": {1: {"name": "a", "color": "#12345g"}}}, r"colour of class 1 must be"),
    ({"classes": {"one": {"name": "a", "color": [1, 2, 3]}}}, r"class code 'one' is not a number"),
    ({"classes": {0: {"name": "a", "color": [1, 2, 3]}}}, r"codes must be distinct and 1\.\.255"),
    ({"classes": {1: {"name": "a", "color": [1, 2, 3]}}, "channels": [1, 5]},
     r"class codes \[5\] are not in legend"),
    ("- not\n- a mapping\n", r"must hold a mapping with 'classes'"),
    ("classes: [unclosed\n", r"cannot read legend file"),
])
def test_a_bad_legend_file_names_the_problem(tmp_path, doc, message):
    with pytest.raises(ConfigError, match=message):
        load_legend(write(tmp_path, doc))


def test_a_missing_legend_file_or_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="cannot read legend file"):
        load_legend(str(tmp_path / "nowhere.yaml"))
    with pytest.raises(ConfigError, match=r"unknown legend 'corine': give sinolc, chesapeake or a \.yaml"):
        load_legend("corine")
