"""Legends: the class codes of a map, their names and colours; 0 is nodata.

A model's output channels map to legend codes (``ModelSpec.classes``); the
legend names and colours those codes in the COGs, the VRT, the statistics and
the quicklooks.  Two legends ship:

``sinolc``
    SinoLC-1's 11 classes (codes 1..11; 8 and 11 inferred from gaps in the
    released files, colours sampled from the published legend figure).
``chesapeake``
    The authors' public Paraformer configuration: 17 output channels, channel 0
    a background class training ignores (dropped: never chosen), channels 1..16
    the NLCD codes of ``utils.py``'s ``LABEL_CLASSES`` with its colours.

A legend file (YAML or JSON) gives a user's own::

    name: my legend
    classes:                        # code (1..255): name and colour
      1: {name: Water, color: [0, 90, 200]}
      2: {name: Forest, color: "#228b22"}
    channels: [drop, 1, 2]          # optional: output channel i -> code (drop: never chosen)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sinolc_dist.errors import ConfigError

NODATA = 0
#: How a dropped output channel is written in ``classes`` (it is never chosen by the argmax).
DROP = "drop"
RGB = tuple[int, int, int]
Channels = tuple[int | None, ...]


def channel_code(value: Any) -> int | None:
    """One entry of a channel → code list: a code 0..255 (0: written as nodata) or ``None`` (dropped)."""
    if value is None or value == DROP:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ConfigError(f"class code {value!r} must be 1..255, 0 (written as nodata) or '{DROP}' "
                          "(a channel never chosen)")
    return int(value)


def channel_codes(values: Iterable[Any]) -> Channels:
    """A channel → code list (see :func:`channel_code`) with at least one channel that is chosen."""
    codes = tuple(channel_code(v) for v in values)
    if not any(c is not None for c in codes):
        raise ConfigError(f"classes {list(values)} drops every output channel: keep at least one")
    return codes


@dataclass(frozen=True)
class Legend:
    """Codes with names and colours, and the output-channel mapping a model of this legend uses."""

    name: str
    entries: tuple[tuple[int, str, RGB], ...]
    channels: Channels

    def __post_init__(self) -> None:
        codes = [code for code, _, _ in self.entries]
        bad = [c for c in codes if not 1 <= c <= 255]
        if bad or len(set(codes)) != len(codes):
            raise ConfigError(f"legend {self.name!r}: codes must be distinct and 1..255, got {codes}")
        self.check(self.channels)

    @property
    def codes(self) -> tuple[int, ...]:
        """The legend's codes, in its order."""
        return tuple(code for code, _, _ in self.entries)

    def check(self, channels: Channels) -> None:
        """Refuse a channel mapping that writes codes this legend does not name."""
        unknown = sorted({c for c in channels if c} - set(self.codes))
        if unknown:
            raise ConfigError(f"class codes {unknown} are not in legend {self.name!r} (codes "
                              f"{list(self.codes)}): fix classes or give a legend that names them "
                              "(--override legend=FILE)")

    def name_of(self, code: int) -> str:
        """The class name of ``code`` (``No data`` for 0, ``code N`` for one not in the legend)."""
        return self.class_names().get(code, f"code {code}")

    def class_names(self) -> dict[int, str]:
        """Code → class name, nodata included."""
        return {NODATA: "No data", **{code: name for code, name, _ in self.entries}}

    def colours(self) -> dict[int, RGB]:
        """Code → RGB of each class."""
        return {code: rgb for code, _, rgb in self.entries}

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table (code → RGBA) with nodata transparent."""
        return {NODATA: (0, 0, 0, 0), **{code: (*rgb, 255) for code, _, rgb in self.entries}}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (recorded in run.json, so the run's products need no legend file)."""
        classes = {str(c): {"name": n, "color": list(rgb)} for c, n, rgb in self.entries}
        return {"name": self.name, "classes": classes,
                "channels": [DROP if c is None else c for c in self.channels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "legend") -> Legend:
        """Read :meth:`to_dict`'s form, which is also the legend file's."""
        classes = data.get("classes")
        if not isinstance(classes, Mapping) or not classes:
            raise ConfigError(f"legend {name}: 'classes' must map codes to {{name, color}}")
        # In code order: run.json is written with sorted keys, which puts "10" before "2".
        entries = tuple(sorted((_code(code, name), str(_field(v, "name", code, name)),
                                _colour(_field(v, "color", code, name), code, name))
                               for code, v in classes.items()))
        channels = channel_codes(data.get("channels") or [c for c, _, _ in entries])
        return cls(str(data.get("name", name)), entries, channels)


def _code(code: Any, source: str) -> int:
    try:
        return int(code)
    except (TypeError, ValueError):
        raise ConfigError(f"legend {source}: class code {code!r} is not a number") from None


def _field(value: Any, key: str, code: Any, source: str) -> Any:
    if not isinstance(value, Mapping) or key not in value:
        raise ConfigError(f"legend {source}: class {code} needs a {key!r} ({{name: …, color: …}})")
    return value[key]


def _colour(value: Any, code: Any, source: str) -> RGB:
    """``[r, g, b]`` (0..255) or ``"#rrggbb"``."""
    if isinstance(value, str) and len(value) == 7 and value.startswith("#"):
        try:
            return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
        except ValueError:
            pass
    elif isinstance(value, list | tuple) and len(value) == 3 and all(
            isinstance(v, int) and 0 <= v <= 255 for v in value):
        return int(value[0]), int(value[1]), int(value[2])
    raise ConfigError(f"legend {source}: colour of class {code} must be [r, g, b] in 0..255 or "
                      f"'#rrggbb', got {value!r}")


SINOLC = Legend("SinoLC-1", (
    (1, "Traffic route", (255, 0, 0)),
    (2, "Tree cover", (56, 87, 35)),
    (3, "Shrubland", (255, 190, 36)),
    (4, "Grassland", (233, 255, 190)),
    (5, "Cropland", (255, 235, 175)),
    (6, "Building", (255, 140, 0)),
    (7, "Barren and sparse vegetation", (180, 180, 180)),
    (8, "Snow and ice", (239, 240, 242)),
    (9, "Water", (1, 101, 201)),
    (10, "Wetland", (0, 148, 157)),
    (11, "Moss and lichen", (250, 230, 160)),
), channels=tuple(range(1, 12)))

CHESAPEAKE = Legend("Chesapeake (NLCD, as in the authors' Paraformer utils.py)", (
    (11, "Open water", (70, 107, 159)),
    (12, "Perennial ice/snow", (209, 222, 248)),
    (21, "Developed, open space", (222, 197, 197)),
    (22, "Developed, low intensity", (217, 146, 130)),
    (23, "Developed, medium intensity", (235, 0, 0)),
    (24, "Developed, high intensity", (171, 0, 0)),
    (31, "Barren land", (179, 172, 159)),
    (41, "Deciduous forest", (104, 171, 95)),
    (42, "Evergreen forest", (28, 95, 44)),
    (43, "Mixed forest", (181, 197, 143)),
    (52, "Shrub/scrub", (204, 184, 121)),
    (71, "Grassland/herbaceous", (223, 223, 194)),
    (81, "Pasture/hay", (220, 217, 57)),
    (82, "Cultivated crops", (171, 108, 40)),
    (90, "Woody wetlands", (184, 217, 235)),
    (95, "Emergent herbaceous wetlands", (108, 159, 184)),
), channels=(None, 11, 12, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90, 95))

#: The legends that ship, by the name ``ModelSpec.legend`` takes.
LEGENDS = {"sinolc": SINOLC, "chesapeake": CHESAPEAKE}
DEFAULT_LEGEND = "sinolc"


def band_description(legend: Legend) -> str:
    """The class band's description in the COGs and the VRT."""
    return f"land-cover class ({legend.name} legend, 0 = no data)"


def load_legend(spec: str) -> Legend:
    """A shipped legend by name (``sinolc``, ``chesapeake``) or a legend file (YAML/JSON) by path."""
    if spec in LEGENDS:
        return LEGENDS[spec]
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"unknown legend {spec!r}: give {', '.join(LEGENDS)} or a .yaml/.json legend file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read legend file {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"legend file {path} must hold a mapping with 'classes'")
    return Legend.from_dict(data, name=str(path))
