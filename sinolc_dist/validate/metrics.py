"""Accuracy from a confusion matrix, and the stratified (area-weighted) estimator.

Every matrix here is ``matrix[map, reference]``: rows are the map's classes,
columns the reference labels (Olofsson et al. 2014's layout), over a list of
class codes given beside it.

:func:`accuracy` treats the sample as a simple random one: overall accuracy
(OA) with a 95 % Wilson score interval (it stays inside 0..1 when OA is near 1,
where the normal interval does not), Cohen's kappa, and per class the user's
accuracy (precision: of the pixels mapped as the class, the share the reference
agrees with), the producer's accuracy (recall) and F1.

:func:`stratified` is the estimator of Olofsson et al. (2013, 2014, "Good
practices for estimating area and assessing accuracy of land change", RSE 148,
eq. 1-11) for a sample stratified by map class: each stratum's counts are
weighted by its share of the mapped area, giving OA, user's and producer's
accuracy with standard errors, and error-adjusted class areas with 95 %
confidence intervals.  A matrix from a simple random sample may be given too
(post-stratification).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sinolc_dist.errors import InputError

#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where ``den > 0``, NaN elsewhere (an undefined accuracy, not a zero)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _number(value: float) -> float | None:
    """A JSON-ready number: ``None`` for an undefined (NaN) one."""
    return None if value is None or math.isnan(value) else float(value)


def confusion(mapped: np.ndarray, reference: np.ndarray, codes: Sequence[int],
              weights: np.ndarray | None = None) -> np.ndarray:
    """Count (or sum ``weights`` of) each (map, reference) pair of codes into ``matrix[map, reference]``.

    Pairs with a code outside ``codes`` are not counted: callers exclude (and
    report) them before.
    """
    index = np.full(256, -1, np.int64)
    index[list(codes)] = np.arange(len(codes))
    m, r = index[np.asarray(mapped, np.uint8)], index[np.asarray(reference, np.uint8)]
    keep = (m >= 0) & (r >= 0)
    k = len(codes)
    w = None if weights is None else np.asarray(weights, float)[keep]
    flat = np.bincount(m[keep] * k + r[keep], weights=w, minlength=k * k)
    return flat.reshape(k, k)


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(nan, nan)`` for an empty sample)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Accuracy:
    """Accuracy of a map against a simple random sample (see :func:`accuracy`)."""

    codes: tuple[int, ...]
    matrix: np.ndarray
    n: float
    oa: float
    oa_ci95: tuple[float, float]
    kappa: float
    users: np.ndarray
    producers: np.ndarray
    f1: np.ndarray

    def to_dict(self, names: dict[int, str] | None = None) -> dict[str, Any]:
        """JSON-ready: undefined figures (a class without samples) are ``null``."""
        names = names or {}
        return {
            "n": _number(self.n), "oa": _number(self.oa),
            "oa_ci95": [_number(v) for v in self.oa_ci95], "kappa": _number(self.kappa),
            "classes": [{"code": c, "name": names.get(c, str(c)), "users": _number(u),
                         "producers": _number(p), "f1": _number(f),
                         "mapped": _number(row), "reference": _number(col)}
                        for c, u, p, f, row, col in zip(self.codes, self.users, self.producers, self.f1,
                                                        self.matrix.sum(1), self.matrix.sum(0), strict=True)],
            "matrix": self.matrix.tolist(),
        }


def accuracy(matrix: np.ndarray, codes: Sequence[int]) -> Accuracy:
    """OA (with a 95 % Wilson interval), Cohen's kappa, and per-class user's/producer's accuracy and F1."""
    m = np.asarray(matrix, float)
    if m.shape != (len(codes), len(codes)):
        raise InputError(f"confusion matrix of shape {m.shape} does not fit {len(codes)} class codes")
    n = float(m.sum())
    diag = np.diag(m)
    rows, cols = m.sum(1), m.sum(0)
    oa = float(diag.sum() / n) if n else math.nan
    chance = float((rows * cols).sum() / (n * n)) if n else math.nan
    kappa = (oa - chance) / (1 - chance) if n and chance < 1 else math.nan
    users, producers = _ratio(diag, rows), _ratio(diag, cols)
    f1 = _ratio(2 * diag, rows + cols)
    return Accuracy(tuple(int(c) for c in codes), m, n, oa, wilson_interval(float(diag.sum()), n), kappa,
                    users, producers, f1)


@dataclass(frozen=True)
class Stratified:
    """Area-weighted estimates from a sample stratified by map class (Olofsson et al. 2014).

    ``area`` and ``area_se`` are in the unit of the mapped areas given to
    :func:`stratified`; ``area_ci95`` is the half-width of the 95 % interval.
    """

    codes: tuple[int, ...]
    weights: np.ndarray
    proportions: np.ndarray
    oa: float
    oa_se: float
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    area: np.ndarray
    area_se: np.ndarray

    @property
    def area_ci95(self) -> np.ndarray:
        """Half-width of each class area's 95 % confidence interval."""
        return Z95 * self.area_se

    @property
    def oa_ci95(self) -> tuple[float, float]:
        """The 95 % interval of OA (normal, from the stratified standard error, clipped to 0..1)."""
        return (max(0.0, self.oa - Z95 * self.oa_se), min(1.0, self.oa + Z95 * self.oa_se))

    def to_dict(self, names: dict[int, str] | None = None) -> dict[str, Any]:
        """JSON-ready figures (``null`` where undefined)."""
        names = names or {}
        return {
            "oa": _number(self.oa), "oa_se": _number(self.oa_se),
            "oa_ci95": [_number(v) for v in self.oa_ci95],
            "classes": [{"code": c, "name": names.get(c, str(c)), "weight": _number(w),
                         "users": _number(u), "users_se": _number(us), "producers": _number(p),
                         "producers_se": _number(ps), "area": _number(a), "area_se": _number(se),
                         "area_ci95": _number(Z95 * se)}
                        for c, w, u, us, p, ps, a, se in zip(
                            self.codes, self.weights, self.users, self.users_se, self.producers,
                            self.producers_se, self.area, self.area_se, strict=True)],
        }


def stratified(matrix: np.ndarray, codes: Sequence[int], mapped_area: Sequence[float]) -> Stratified:
    """Olofsson et al. (2014)'s stratified estimator from sample counts and each map class's area.

    ``matrix[i, j]``: samples mapped as ``codes[i]`` and labelled ``codes[j]``;
    ``mapped_area[i]``: the map's area of ``codes[i]`` (any unit; the areas
    come back in it).  A stratum with fewer than 2 samples has no variance: its
    standard errors are NaN.
    """
    n_ij = np.asarray(matrix, float)
    big = np.asarray(mapped_area, float)
    k = len(codes)
    if n_ij.shape != (k, k) or big.shape != (k,):
        raise InputError(f"stratified estimate: a {n_ij.shape} matrix and {big.shape} areas do not fit "
                         f"{k} class codes")
    total = big.sum()
    if total <= 0:
        raise InputError("stratified estimate: the mapped classes cover no area; check the run's statistics")
    n_i = n_ij.sum(1)
    dof = np.where(n_i > 1, n_i - 1, np.nan)  # a stratum of fewer than 2 samples has no variance
    w = big / total
    share = np.nan_to_num(_ratio(n_ij, n_i[:, None]))  # n_ij / n_i: the stratum's proportions
    p = w[:, None] * share
    prop = p.sum(0)
    users = _ratio(np.diag(p), p.sum(1))
    producers = _ratio(np.diag(p), prop)
    users_se = np.sqrt(users * (1 - users) / dof)
    oa = float(np.trace(p))
    oa_se = float(math.sqrt(np.nansum(w**2 * users * (1 - users) / dof)))
    cell_var = share * (1 - share) / dof[:, None]  # each (map, reference) proportion's variance / W²
    area_se = total * np.sqrt(np.nansum(w[:, None] ** 2 * cell_var, 0))
    # Producer's accuracy's variance (eq. 7 of Olofsson et al. 2013): the diagonal stratum, then the others.
    col_n = (big[:, None] * share).sum(0)
    off = big[:, None] ** 2 * cell_var
    off_sum = np.nansum(off, 0) - np.nan_to_num(np.diag(off))
    diag_term = big**2 * (1 - producers) ** 2 * users * (1 - users) / dof
    producers_se = np.sqrt(_ratio(diag_term + producers**2 * off_sum, col_n**2))
    return Stratified(tuple(int(c) for c in codes), w, prop, oa, oa_se, users, users_se, producers,
                      producers_se, total * prop, area_se)
