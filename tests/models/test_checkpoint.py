"""Checkpoint files that cannot be used are refused in one plain line that says why and what to do."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from sinolc_dist.errors import CheckpointError
from sinolc_dist.models.checkpoint import input_band_names, input_bands, load_checkpoint, one_line
from tests.models.authors_layout import l2hnet_layout, random_state_dict, save_plain


class PickledNet(torch.nn.Module):
    """A whole module saved with torch.save(model): its file imports and runs this class."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)


def test_one_line_drops_escapes_and_line_breaks():
    assert one_line("\x1b[1mdo this\x1b[0m.\n\t(1) then\n\nthat") == "do this. (1) then that"


@pytest.mark.slow
def test_pickled_code_is_refused_naming_it_through_the_cli(tmp_path):
    """Issue 15 point 5: the whole refusal, in one line, naming the class and the fix; nothing written."""
    path = tmp_path / "whole-model.pt"
    torch.save(PickledNet(), path)
    proc = subprocess.run(
        [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "run", "--region",
         "bbox:114.0,30.0,114.01,30.01", "--workflow", "demo", "--checkpoint", str(path),
         "--run-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: checkpoint {path} holds pickled code ({PickledNet.__module__}.PickledNet")
    assert line.endswith("torch.save(model.state_dict(), 'weights.pt') (or a sinolc checkpoint with "
                         "sinolc_dist.models.checkpoint.save_checkpoint) and give that file")
    assert "weights_only" not in line and "\x1b" not in line
    assert not (tmp_path / "r").exists()


def test_pickled_extras_beside_the_weights_are_named(tmp_path):
    """A training checkpoint that pickles its arguments beside the state_dict."""
    path = tmp_path / "train.pt"
    torch.save({"state_dict": PickledNet().state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"holds pickled code \(argparse\.Namespace\) that sinolc-dist"):
        load_checkpoint(path)


def test_a_corrupt_file_keeps_the_whole_reason(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(PickledNet().state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(cut)
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message
    assert "failed finding central directory" in message  # torch's reason, past the old 200-character cut
    assert message.endswith("it may be truncated or not a torch file: copy it again or retrain")


def test_input_band_names_say_what_imagery_a_model_needs(tmp_path):
    layout = {**l2hnet_layout(), "startconv.weight": [64, 4, 3, 3]}
    plain = save_plain(tmp_path / "nir.pth", random_state_dict(layout, seed=0))
    assert input_band_names(plain) == ("band 1", "band 2", "band 3", "band 4")
    nir = ("red", "green", "blue", "nir")
    assert input_band_names(plain, {"bands": list(nir)}) == nir
    rgb = save_plain(tmp_path / "rgb.pth", random_state_dict(l2hnet_layout(), seed=0))
    assert input_band_names(rgb) == ("red", "green", "blue") and input_bands(rgb) == 3
