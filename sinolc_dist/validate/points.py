"""``validate --points``: the run's classes at reference points, per province and national.

Each point is reprojected to the grid, looked up in its pixel (the pixel whose
square holds it), and compared with its label.  A point is left out, counted
and listed with the first reason that applies, in this order: ``no label``
(blank), ``unknown class`` (a label that names no class of the legend),
``bad coordinates``, ``outside the run`` (off the grid or in a chunk the run
did not plan), ``chunk not done`` (pending or failed: its pixels may be stale),
``no imagery``, ``nodata`` (the map holds 0 there).  Nothing is dropped
silently.

With ``strata="class"`` the sample is taken as stratified by map class (as
``sinolc-dist sample --strata class`` draws it) and the national estimate is
also Olofsson et al. (2014)'s, weighted by the mapped class areas of the done
chunks.  Per province only the simple-random figures are given (the strata
weights are national).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sinolc_dist.errors import ConfigError
from sinolc_dist.legend import Legend
from sinolc_dist.regions.provinces import PROVINCES
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, NO_IMAGERY
from sinolc_dist.validate import result_files
from sinolc_dist.validate.metrics import Accuracy, Stratified, accuracy, confusion, stratified
from sinolc_dist.validate.pointfile import label_codes, load_class_map, read_point_file
from sinolc_dist.validate.runmap import OUTSIDE, STATUS_CODE, RunMap

NO_LABEL, UNKNOWN, BAD_XY, OUTSIDE_RUN, NOT_DONE, NO_IMAGERY_REASON, NODATA = (
    "no label", "unknown class", "bad coordinates", "outside the run", "chunk not done", "no imagery",
    "nodata")
REASONS = (NO_LABEL, UNKNOWN, BAD_XY, OUTSIDE_RUN, NOT_DONE, NO_IMAGERY_REASON, NODATA)
STRATA = ("none", "class")
#: Scope name of the national figures (provinces go by adcode).
NATIONAL = "national"


@dataclass(frozen=True)
class Exclusion:
    """A point left out of the figures, with why (coordinates as in the file)."""

    id: str
    x: float
    y: float
    label: Any
    reason: str


@dataclass(frozen=True)
class PointsResult:
    """What ``validate --points`` found."""

    source: str
    codes: tuple[int, ...]
    scopes: dict[str, Accuracy]
    stratified: Stratified | None
    excluded: tuple[Exclusion, ...]
    total: int
    unproducible: tuple[int, ...]

    @property
    def national(self) -> Accuracy:
        """The figures over every point used."""
        return self.scopes[NATIONAL]

    def counts(self) -> dict[str, int]:
        """Points left out per reason (every reason present), and the points used."""
        out = dict.fromkeys(REASONS, 0)
        for e in self.excluded:
            out[e.reason] += 1
        return {"points": self.total, "used": int(self.national.n), **out}


def _pixels(rm: RunMap, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid ``(rows, cols)`` of each point, and which have finite coordinates."""
    finite = np.isfinite(x) & np.isfinite(y)
    col, row = ~rm.grid.transform @ (np.where(finite, x, 0.0), np.where(finite, y, 0.0))
    return np.floor(row).astype(np.int64), np.floor(col).astype(np.int64), finite


def _reasons(rm: RunMap, ref: np.ndarray, blank: np.ndarray, x: np.ndarray, y: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each point's exclusion reason (``""`` when used), grid row and column, and map code."""
    rows, cols, finite = _pixels(rm, x, y)
    status = np.where(finite, rm.chunk_status(rows, cols), OUTSIDE)
    reason = np.full(len(ref), "", dtype=object)
    checks = ((blank, NO_LABEL), (ref == 0, UNKNOWN), (~finite, BAD_XY), (status == OUTSIDE, OUTSIDE_RUN),
              (status == STATUS_CODE[NO_IMAGERY], NO_IMAGERY_REASON),
              (status != STATUS_CODE[DONE], NOT_DONE))
    for hit, why in checks:
        reason[(reason == "") & hit] = why
    mapped = np.zeros(len(ref), np.uint8)
    todo = reason == ""
    mapped[todo] = rm.read_pixels(rows[todo], cols[todo])
    reason[todo & (mapped == 0)] = NODATA
    return reason, rows, cols, mapped


def validate_points(rundir: RunDir, path: str | Path, crs: str | None = None,
                    class_column: str | None = None, class_map: str | Path | None = None,
                    strata: str = "none") -> PointsResult:
    """Accuracy of a run at the reference points of ``path`` (see the module's docstring)."""
    if strata not in STRATA:
        raise ConfigError(f"--strata {strata!r} is not one of {', '.join(STRATA)}")
    rm = RunMap.open(rundir)
    table = read_point_file(path, crs, class_column)
    ref, blank = label_codes(table.labels, rm.legend, load_class_map(class_map, rm.legend))
    x, y = table.to_crs(rm.grid.crs)
    reason, rows, cols, mapped = _reasons(rm, ref, blank, x, y)
    used = reason == ""
    codes = tuple(sorted({*rm.legend.codes, *np.unique(mapped[used]).tolist()}))
    scopes = {NATIONAL: accuracy(confusion(mapped[used], ref[used], codes), codes)}
    province = rm.province_of(rows[used], cols[used])
    for adcode in sorted(set(province) - {""}):
        here = province == adcode
        scopes[adcode] = accuracy(confusion(mapped[used][here], ref[used][here], codes), codes)
    estimate = None
    if strata == "class":
        km2 = rm.mapped_km2()
        estimate = stratified(scopes[NATIONAL].matrix, codes, km2[list(codes)])
    excluded = tuple(Exclusion(table.ids[i], float(table.x[i]), float(table.y[i]), table.labels[i], reason[i])
                     for i in np.flatnonzero(~used))
    produced = {c for c in rm.legend.channels if c}
    unproducible = tuple(sorted({int(c) for c in ref[used]} - produced))
    return PointsResult(str(path), codes, scopes, estimate, excluded, len(ref), unproducible)


def scope_name(scope: str) -> str:
    """A scope's display name: ``national`` or a province's English name."""
    return PROVINCES[scope].name_en if scope in PROVINCES else scope


def write_points_results(folder: Path, result: PointsResult, legend: Legend) -> list[Path]:
    """Write the results' tables, confusion matrix picture and JSON report into ``folder``.

    ``accuracy.csv``, ``classes.csv``, ``confusion.csv``/``.png``, ``excluded.csv``,
    ``stratified.csv`` (with ``--strata class``) and ``report.json``.
    """
    result_files.results_folder(folder)
    names = {s: scope_name(s) for s in result.scopes}
    paths = [result_files.write_csv(folder / "accuracy.csv", result_files.ACCURACY_HEADER,
                              result_files.accuracy_rows(result.scopes, names)),
             result_files.write_csv(folder / "classes.csv", result_files.CLASS_HEADER,
                              result_files.class_rows(result.scopes, legend)),
             *result_files.write_confusion(folder, result.national, legend),
             result_files.write_csv(folder / "excluded.csv", ("id", "x", "y", "label", "reason"),
                              ([e.id, e.x, e.y, e.label, e.reason] for e in result.excluded))]
    if result.stratified is not None:
        paths.append(result_files.write_csv(folder / "stratified.csv", result_files.STRATIFIED_HEADER,
                                      result_files.stratified_rows(result.stratified, legend)))
    class_names = legend.class_names()
    doc = {"points": result.source, "counts": result.counts(),
           "unproducible_reference_classes": list(result.unproducible),
           "scopes": {s: {"name": names[s], **a.to_dict(class_names)} for s, a in result.scopes.items()},
           "stratified": None if result.stratified is None else result.stratified.to_dict(class_names),
           "area_unit": "km2"}
    paths.append(result_files.write_json(folder / "report.json", doc))
    return paths
