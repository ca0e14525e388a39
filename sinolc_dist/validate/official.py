"""``validate --stats FILE.csv``: the run's class areas per province against official figures.

Ours come from the run's ``stats/classes_km2.json`` (written by the mosaic:
equal-area km² of each class inside each province).  The official CSV is
either long (``province,class,km2``: one row per province and class) or wide
(a ``province`` column, then one column per class, as ``classes_km2.csv``
itself); a province by adcode, Chinese or English name; a class by our code,
our name, or through ``--class-map`` (several official classes may map to one
of ours: their areas add up).  Only classes the official table gives are
compared; provinces missing on either side are listed.

The misestimation rate, after SinoLC-1's comparison with survey statistics
(the paper gives the idea, not the formula; this is ours): for province ``p``
over the compared classes ``k``::

    MR_p = Σ_k |ours_pk − official_pk| / Σ_k official_pk

and overall ``MR = Σ_p Σ_k |ours_pk − official_pk| / Σ_p Σ_k official_pk``
(the official-area-weighted mean of the provinces' rates).  Per class we also
give the national relative error ``(Σ_p ours_pk − Σ_p official_pk) / Σ_p official_pk``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinolc_dist.errors import InputError
from sinolc_dist.legend import Legend
from sinolc_dist.regions.provinces import PROVINCES, province_by_name
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.validate import result_files
from sinolc_dist.validate.pointfile import label_codes, load_class_map

Areas = dict[str, dict[int, float]]


@dataclass(frozen=True)
class StatsResult:
    """Ours and the official km² per compared province and class, and what could not be compared."""

    source: str
    ours: Areas
    official: Areas
    missing_ours: tuple[str, ...]
    unknown: tuple[str, ...]

    def rate(self, adcode: str) -> float:
        """A province's misestimation rate over the classes the official table gives."""
        off = self.official[adcode]
        return sum(abs(self.ours[adcode].get(k, 0.0) - v) for k, v in off.items()) / sum(off.values())

    @property
    def overall(self) -> float:
        """The overall misestimation rate (see the module's docstring)."""
        err = sum(abs(self.ours[p].get(k, 0.0) - v)
                  for p, off in self.official.items() for k, v in off.items())
        return err / sum(v for off in self.official.values() for v in off.values())

    def class_errors(self) -> dict[int, tuple[float, float, float]]:
        """Per class: official km², ours km² (over the compared provinces) and the relative error."""
        out = {}
        for k in sorted({k for off in self.official.values() for k in off}):
            off = sum(o.get(k, 0.0) for o in self.official.values())
            ours = sum(self.ours[p].get(k, 0.0) for p, o in self.official.items() if k in o)
            out[k] = (off, ours, (ours - off) / off if off else float("nan"))
        return out


def read_our_areas(rundir: RunDir) -> Areas:
    """The run's class km² per province (adcode), from ``stats/classes_km2.json``."""
    path = rundir.stats / "classes_km2.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {p["adcode"]: {int(c): float(v) for c, v in p["km2"].items()} for p in doc["provinces"]}
    except FileNotFoundError:
        raise InputError(f"{path} not found: run `sinolc-dist mosaic` (it writes the statistics) "
                         "first") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is damaged ({exc}): rerun `sinolc-dist mosaic`") from None


def _province(text: str, path: Path) -> str:
    prov = province_by_name(str(text))
    if prov is None:
        raise InputError(f"official statistics {path}: {text!r} is not a province (give an adcode, "
                         "Chinese or English name)")
    return prov.adcode


def _km2(text: Any, path: Path) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(f"official statistics {path}: km² {text!r} is not a number") from None


def read_official(path: str | Path, legend: Legend, class_map: str | Path | None = None
                  ) -> tuple[Areas, tuple[str, ...]]:
    """The official km² per province and our class, and the official class names that map to none of ours."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read official statistics {path}: {exc}") from None
    if not rows:
        raise InputError(f"official statistics {path} has no rows: give province,class,km2 rows")
    lower = {c.strip().lower(): c for c in rows[0]}
    if "province" not in lower:
        raise InputError(f"official statistics {path} has no 'province' column (columns: "
                         f"{', '.join(rows[0])}): add one")
    long = "class" in lower and "km2" in lower
    cells = ([(r[lower["province"]], r[lower["class"]], r[lower["km2"]]) for r in rows] if long else
             [(r[lower["province"]], col, r[col]) for r in rows for col in rows[0]
              if col != lower["province"] and (r[col] or "").strip()])
    codes, _ = label_codes([c for _, c, _ in cells], legend, load_class_map(class_map, legend))
    out: Areas = {}
    unknown = set()
    for (prov, cls, km2), code in zip(cells, codes, strict=True):
        if not code:
            unknown.add(str(cls))
            continue
        areas = out.setdefault(_province(prov, path), {})
        areas[int(code)] = areas.get(int(code), 0.0) + _km2(km2, path)
    if not out:
        raise InputError(f"official statistics {path}: no class names a class of the run's legend "
                         f"({', '.join(sorted(unknown)[:5])}…): give --class-map")
    return out, tuple(sorted(unknown))


def compare_stats(rundir: RunDir, path: str | Path, legend: Legend,
                  class_map: str | Path | None = None) -> StatsResult:
    """Compare the run's statistics with the official ones (see the module's docstring)."""
    ours = read_our_areas(rundir)
    official, unknown = read_official(path, legend, class_map)
    compared = {p: a for p, a in official.items() if p in ours and sum(a.values()) > 0}
    if not compared:
        raise InputError(f"official statistics {path} name none of the run's provinces "
                         f"({', '.join(PROVINCES[p].name_en for p in ours)})")
    missing = tuple(sorted(set(official) - set(ours)))
    return StatsResult(str(path), ours, compared, missing, unknown)


def write_stats_results(folder: Path, result: StatsResult, legend: Legend) -> list[Path]:
    """Write ``misestimation.csv`` (per province and overall), ``classes.csv`` and ``report.json``."""
    result_files.results_folder(folder)
    rows = [[p, PROVINCES[p].name_en, sum(off.values()), sum(result.ours[p].get(k, 0.0) for k in off),
             result.rate(p)] for p, off in result.official.items()]
    total = ["", "overall", sum(r[2] for r in rows), sum(r[3] for r in rows), result.overall]
    classes = [[k, legend.name_of(k), off, ours, rel]
               for k, (off, ours, rel) in result.class_errors().items()]
    doc = {"official": result.source,
           "formula": "sum |ours - official| / sum official, over the compared classes",
           "overall": result.overall,
           "provinces": {r[0]: {"name": r[1], "official_km2": r[2], "ours_km2": r[3], "misestimation": r[4]}
                         for r in rows},
           "classes": {str(r[0]): {"name": r[1], "official_km2": r[2], "ours_km2": r[3],
                                   "relative_error": None if r[4] != r[4] else r[4]} for r in classes},
           "provinces_not_in_run": list(result.missing_ours), "unknown_classes": list(result.unknown)}
    header = ("adcode", "province", "official_km2", "ours_km2", "misestimation")
    return [result_files.write_csv(folder / "misestimation.csv", header, [*rows, total]),
            result_files.write_csv(folder / "classes.csv", ("code", "class", "official_km2", "ours_km2",
                                                      "relative_error"), classes),
            result_files.write_json(folder / "report.json", doc)]
