"""Validation results as files: a CSV per table, a JSON report, a PNG of the confusion matrix.

Each kind of validation writes into its own folder under
``<run-dir>/validation/`` (``points/``, ``against/``, ``stats/``), every file
atomically, so a rerun replaces the last results whole.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sinolc_dist.errors import InputError
from sinolc_dist.files import atomic_write_text, replacing
from sinolc_dist.legend import Legend
from sinolc_dist.validate.metrics import Accuracy, Stratified


def _cell(value: Any) -> Any:
    """A CSV cell: floats with 6 decimals, NaN as blank."""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{float(value):.6f}"
    return value


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write one table as CSV (atomically); returns its path."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    atomic_write_text(path, buf.getvalue())
    return path


def write_json(path: Path, doc: dict[str, Any]) -> Path:
    """Write the JSON report (atomically); returns its path."""
    atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))
    return path


def results_folder(folder: Path) -> Path:
    """Create a results folder, or say why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {folder} ({exc.strerror}): make the run directory "
                         "writable") from None
    return folder


def accuracy_rows(scopes: dict[str, Accuracy], names: dict[str, str]) -> list[list[Any]]:
    """One row per scope: n, OA, its 95 % interval, kappa."""
    return [[scope, names.get(scope, scope), int(a.n), a.oa, *a.oa_ci95, a.kappa]
            for scope, a in scopes.items()]


ACCURACY_HEADER = ("scope", "name", "n", "oa", "oa_ci95_low", "oa_ci95_high", "kappa")
CLASS_HEADER = ("scope", "code", "class", "mapped_n", "reference_n", "users", "producers", "f1")
STRATIFIED_HEADER = ("code", "class", "weight", "users", "users_se", "producers", "producers_se",
                     "area_km2", "area_se_km2", "area_ci95_km2")


def class_rows(scopes: dict[str, Accuracy], legend: Legend) -> list[list[Any]]:
    """One row per scope and class: samples mapped and labelled, user's and producer's accuracy, F1."""
    return [[scope, c, legend.name_of(c), a.matrix[i].sum(), a.matrix[:, i].sum(), a.users[i],
             a.producers[i], a.f1[i]]
            for scope, a in scopes.items() for i, c in enumerate(a.codes)]


def stratified_rows(est: Stratified, legend: Legend) -> list[list[Any]]:
    """One row per class of the stratified estimate (areas in km²)."""
    return [[c, legend.name_of(c), est.weights[i], est.users[i], est.users_se[i], est.producers[i],
             est.producers_se[i], est.area[i], est.area_se[i], est.area_ci95[i]]
            for i, c in enumerate(est.codes)]


def write_confusion(folder: Path, acc: Accuracy, legend: Legend, unit: str = "samples") -> tuple[Path, Path]:
    """The confusion matrix (map rows, reference columns) as ``confusion.csv`` and ``confusion.png``."""
    names = [legend.name_of(c) for c in acc.codes]
    csv_path = write_csv(folder / "confusion.csv", [f"map \\ reference ({unit})", *names],
                         ([name, *row] for name, row in zip(names, _counts(acc.matrix), strict=True)))
    png = folder / "confusion.png"
    _plot_confusion(png, acc, names, unit)
    return csv_path, png


def _counts(matrix: np.ndarray) -> list[list[Any]]:
    """Matrix rows as integers when they are counts (pixels, samples), else as they are."""
    whole = np.array_equal(matrix, np.round(matrix))
    return matrix.astype(np.int64).tolist() if whole else matrix.tolist()


def _plot_confusion(path: Path, acc: Accuracy, names: list[str], unit: str) -> None:
    """A heat map of the matrix, each row as shares of the row (user's view), counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    m = acc.matrix
    rows = m.sum(1, keepdims=True)
    shares = np.divide(m, rows, out=np.zeros_like(m, float), where=rows > 0)
    k = len(names)
    fig, ax = plt.subplots(figsize=(2 + 0.6 * k, 1.5 + 0.6 * k), dpi=100)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("reference")
    ax.set_ylabel("map")
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                text = f"{m[i, j]:.0f}" if unit == "samples" else f"{m[i, j]:.3g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=6,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title(f"OA {acc.oa * 100:.2f} %, kappa {acc.kappa:.3f} ({unit})" if acc.n else "no samples",
                 fontsize=8)
    fig.tight_layout()
    with replacing(path, ".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
