"""Reference points from a file, and their labels as the run's class codes.

Formats: GeoJSON (a FeatureCollection of points; EPSG:4326 unless the legacy
``crs`` member says otherwise), GeoPackage (the first point layer, in its own
CRS) and CSV (``lon``/``lat`` columns, in EPSG:4326 unless ``--crs`` says
otherwise, or ``x``/``y`` columns with ``--crs``).  The class column is
``--class-column``, by default ``class`` or ``label``; a label is a code of the
run's legend, a class name of it (any case), or anything a ``--class-map`` YAML
translates (``{their label: our code or name}``).  Labels that name no class
of the legend are counted and listed as ``unknown class``, never dropped
silently.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from sinolc_dist.errors import ConfigError, InputError
from sinolc_dist.grid import LONLAT, resolve_crs
from sinolc_dist.legend import Legend
from sinolc_dist.validate import gpkg

DEFAULT_CLASS_COLUMNS = ("class", "label")
_LON, _LAT = ("lon", "longitude", "lng"), ("lat", "latitude")


@dataclass(frozen=True)
class PointTable:
    """Points as read: coordinates in their CRS, an id, the raw label of each."""

    path: Path
    crs: str
    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    labels: list[Any]

    def to_crs(self, crs: str) -> tuple[np.ndarray, np.ndarray]:
        """The points' coordinates in ``crs``."""
        if CRS.from_user_input(self.crs) == CRS.from_user_input(crs):
            return self.x, self.y
        x, y = Transformer.from_crs(self.crs, crs, always_xy=True).transform(self.x, self.y)
        return np.asarray(x, float), np.asarray(y, float)


def _checked_crs(text: str, path: Path) -> str:
    """A CRS PROJ knows, or an error naming the file and the fix."""
    try:
        CRS.from_user_input(resolve_crs(text))
    except CRSError:
        raise InputError(f"points file {path}: CRS {text!r} is unknown to PROJ; give --crs "
                         "(e.g. EPSG:4326) or reproject the file") from None
    return resolve_crs(text)


def _class_column(columns: list[str], wanted: str | None, path: Path) -> str:
    """The class column: ``wanted``, else ``class`` or ``label`` (any case)."""
    lower = {c.lower(): c for c in columns}
    for name in (wanted,) if wanted else DEFAULT_CLASS_COLUMNS:
        if name.lower() in lower:
            return lower[name.lower()]
    what = f"no column {wanted!r}" if wanted else "no 'class' or 'label' column"
    raise InputError(f"points file {path} has {what} (columns: {', '.join(columns) or 'none'}): name the "
                     "reference class column with --class-column")


def _table(path: Path, crs: str, x: Any, y: Any, ids: list[str], labels: list[Any]) -> PointTable:
    """A :class:`PointTable`, refusing a file without points."""
    if not labels:
        raise InputError(f"points file {path} holds no points: give a file with reference points")
    return PointTable(path, crs, np.asarray(x, float), np.asarray(y, float), ids, labels)


def _from_rows(path: Path, crs: str, x: Any, y: Any, rows: list[dict[str, Any]],
               column: str | None) -> PointTable:
    """A :class:`PointTable` from coordinates and attribute rows (GeoJSON, GeoPackage)."""
    col = _class_column(list(rows[0]), column, path) if rows else ""
    ids = [str(r.get("id", r.get("fid", i + 1))) for i, r in enumerate(rows)]
    return _table(path, crs, x, y, ids, [r.get(col) for r in rows])


def _number(text: Any) -> float:
    """A coordinate from a CSV cell (NaN when blank or not a number: counted as bad coordinates)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _csv_xy(header: list[str], crs: str | None, path: Path) -> tuple[int, int, str]:
    """The coordinate columns of a CSV header and the points' CRS."""
    names = {c.lower(): i for i, c in enumerate(header)}
    lon = next((names[c] for c in _LON if c in names), None)
    lat = next((names[c] for c in _LAT if c in names), None)
    if lon is not None and lat is not None:
        return lon, lat, _checked_crs(crs, path) if crs else LONLAT
    if "x" in names and "y" in names:
        if not crs:
            raise InputError(f"points file {path} has x/y columns but no CRS: give it with --crs "
                             "(e.g. --crs EPSG:32650)")
        return names["x"], names["y"], _checked_crs(crs, path)
    raise InputError(f"points file {path} has no lon/lat or x/y columns (columns: "
                     f"{', '.join(header) or 'none'}): add them")


def _read_csv(path: Path, crs: str | None, column: str | None) -> PointTable:
    """Stream a CSV's coordinate, class and id columns (a million points stay a few arrays)."""
    xs: list[float] = []
    ys: list[float] = []
    ids: list[str] = []
    labels: list[Any] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            xcol, ycol, src = _csv_xy(header, crs, path)
            cls = header.index(_class_column(header, column, path))
            idc = next((i for i, h in enumerate(header) if h.lower() in ("id", "fid")), None)
            for n, row in enumerate(reader, 1):
                if not row:
                    continue
                row += [""] * (len(header) - len(row))
                xs.append(_number(row[xcol]))
                ys.append(_number(row[ycol]))
                labels.append(row[cls])
                ids.append(row[idc] if idc is not None else str(n))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read points file {path}: {exc}") from None
    return _table(path, src, xs, ys, ids, labels)


def _read_geojson(path: Path, crs: str | None, column: str | None) -> PointTable:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"points file {path} is not valid GeoJSON: {exc}") from None
    legacy = (doc.get("crs") or {}).get("properties") or {} if isinstance(doc, dict) else {}
    src = _checked_crs(crs or str(legacy.get("name") or LONLAT), path)
    feats = doc.get("features", []) if isinstance(doc, dict) else []
    xs, ys, rows = [], [], []
    for f in feats:
        geom = f.get("geometry") or {}
        coords = geom.get("coordinates") if geom.get("type") in ("Point", "MultiPoint") else None
        if geom.get("type") == "MultiPoint" and coords:
            coords = coords[0]
        xs.append(_number(coords[0]) if coords else float("nan"))
        ys.append(_number(coords[1]) if coords else float("nan"))
        rows.append(dict(f.get("properties") or {}, **({"id": f["id"]} if "id" in f else {})))
    return _from_rows(path, src, xs, ys, rows, column)


def read_point_file(path: str | Path, crs: str | None = None, class_column: str | None = None) -> PointTable:
    """Read a GeoJSON, GeoPackage or CSV points file (see the module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"points file {path} not found: check the path")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, crs, class_column)
    if suffix in (".geojson", ".json"):
        return _read_geojson(path, crs, class_column)
    if suffix == ".gpkg":
        x, y, src, rows = gpkg.read_points(path)
        return _from_rows(path, _checked_crs(crs or src, path), x, y, rows, class_column)
    raise InputError(f"points file {path}: unsupported format {suffix!r}; give .geojson, .gpkg or .csv")


def _fold(value: Any) -> str:
    """A label as compared: text, trimmed, case-folded; ``3.0`` read as ``3``."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text.casefold()
    return str(int(number)) if number.is_integer() else text


def load_class_map(path: str | Path | None, legend: Legend) -> dict[str, int]:
    """A ``--class-map`` YAML (``their label: our code or class name``) as folded label → our code."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read class map {path}: {exc}") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"class map {path} must map labels to the run's classes "
                          "({their label: our code})")
    ours = _legend_lookup(legend)
    out = {}
    for theirs, target in data.items():
        code = ours.get(_fold(target))
        if code is None:
            raise ConfigError(f"class map {path} maps {theirs!r} to {target!r}, not a class of the run's "
                              f"legend (codes {list(legend.codes)}): fix the map")
        out[_fold(theirs)] = code
    return out


def _legend_lookup(legend: Legend) -> dict[str, int]:
    """Folded code and class name → code, for the legend's classes."""
    return {**{_fold(n): c for c, n, _ in legend.entries}, **{str(c): c for c in legend.codes}}


def label_codes(labels: list[Any], legend: Legend,
                class_map: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each label as a legend code (0 where it names none) and whether it was blank.

    The class map is tried first, then the legend's codes and names.
    """
    ours = _legend_lookup(legend)
    codes = np.zeros(len(labels), np.uint8)
    blank = np.zeros(len(labels), bool)
    for i, label in enumerate(labels):
        if label is None or str(label).strip() == "":
            blank[i] = True
            continue
        key = _fold(label)
        codes[i] = class_map.get(key, ours.get(key, 0))
    return codes, blank
