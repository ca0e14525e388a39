"""Result files: CSV cells, the JSON report, the confusion matrix picture."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np

from sinolc_dist.legend import SINOLC
from sinolc_dist.validate import result_files
from sinolc_dist.validate.metrics import accuracy


def test_csv_cells_round_floats_and_leave_undefined_ones_blank(tmp_path):
    path = result_files.write_csv(tmp_path / "t.csv", ["a", "b", "c"], [[1, 0.1234567, float("nan")]])
    assert path.read_text() == "a,b,c\n1,0.123457,\n"


def test_the_confusion_matrix_as_csv_and_png(tmp_path):
    acc = accuracy(np.array([[5, 1], [0, 4]]), [2, 9])
    csv_path, png = result_files.write_confusion(tmp_path, acc, SINOLC)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "map \\ reference (samples),Tree cover,Water" and lines[1] == "Tree cover,5,1"
    assert matplotlib.image.imread(png).ndim == 3
    doc = json.loads(result_files.write_json(tmp_path / "r.json", {"oa": acc.to_dict()["oa"]}).read_text())
    assert doc["oa"] == 0.9
