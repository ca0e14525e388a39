from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sinolc_dist.errors import ConfigError
from sinolc_dist.models.loader import ModelRef
from sinolc_dist.stages.workflow import (
    ModelChoice,
    ModelOptions,
    load_profile,
    load_workflow,
    model_ref,
    parse_overrides,
)


@pytest.mark.parametrize("name", ["demo", "cn", "cn-geographic", "paraformer", "cn-paraformer"])
def test_shipped_workflows_load_with_auto_patches(name):
    wf = load_workflow(name)
    assert wf.model.patch == "auto"
    assert isinstance(wf.model, ModelRef)


@pytest.mark.parametrize("name", ["paraformer", "cn-paraformer"])
def test_paraformer_workflows_blend_as_the_authors_test_py(name):
    wf = load_workflow(name)
    overrides = dict(wf.model.overrides)
    assert overrides["arch"] == "paraformer" and wf.model.blend == "authors" and wf.model.chip_stride == 112
    # Chunks are whole chip strides and the halo is chip - stride: chunked = one blended pass.
    assert wf.grid.chunk % 112 == 0 and wf.grid.halo == 224 - 112 and wf.model.batch == "auto"


def test_spec_keys_and_the_command_line_join_the_overrides(tmp_path):
    legend = tmp_path / "mine.yaml"
    wf = load_workflow(_workflow(tmp_path, f"{{checkpoint: demo, arch: l2hnet, legend: {legend.name}, "
                                           "overrides: {mean: [1, 2, 3]}}"),
                       choice=ModelChoice(width=128, plugin="pkg.mod:make", kwargs={"depth": 2},
                                          overrides={"std": [4, 5, 6]}))
    # A legend given by path is made absolute (as the checkpoint is, from here): workers read it too.
    assert dict(wf.model.overrides) == {"arch": "l2hnet", "legend": str(Path(legend.name).resolve()),
                                        "mean": (1, 2, 3), "std": (4, 5, 6), "width": 128}
    assert wf.model.plugin == "pkg.mod:make" and dict(wf.model.kwargs) == {"depth": 2}
    wf = load_workflow(_workflow(tmp_path, "{checkpoint: demo}"),
                       choice=ModelChoice(overrides={"legend": "chesapeake"}))
    assert dict(wf.model.overrides) == {"legend": "chesapeake"}


def test_model_choice_as_run_flags_reads_back():
    choice = ModelChoice("paraformer", 64, None, {"k": 1}, {"classes": ["drop", 1], "mean": [1.5, 2.0]})
    assert choice.flags() == ["--arch", "paraformer", "--width", "64", "--kwargs", "k=1",
                              "--override", 'classes=["drop", 1]', "--override", "mean=[1.5, 2.0]"]
    assert parse_overrides(["classes=[\"drop\", 1]", "mean=[1.5, 2.0]"]) == dict(choice.overrides)


def _workflow(tmp_path, model: str) -> str:
    path = tmp_path / "wf.yaml"
    path.write_text("grid: {crs: china-albers, chunk: 512, block: 256}\nmodel: " + model + "\n")
    return str(path)


@pytest.mark.parametrize(("model", "message"), [
    ("{checkpoint: demo, patchsize: 256}", r"unknown key\(s\) \['patchsize'\] in .*valid keys: .*'patch'"),
    ("{checkpoint: demo, threads: 4}", r"unknown key\(s\) \['threads'\]"),  # the cluster profile's
    ("{checkpoint: demo, amp: fp8}", r"model\.amp must be one of none, bf16, fp16, got 'fp8'"),
    ("{checkpoint: demo, patch: 8}", r"model\.patch must be 'auto' or a side of at least 16 px"),
    ("{checkpoint: demo, blend: median}", r"blend must be one of none, gaussian, authors"),
    ("{checkpoint: demo, batch: 0}", r"model\.batch must be 'auto' or a number of chips >= 1, got 0"),
])
def test_bad_model_section_is_refused(tmp_path, model, message):
    with pytest.raises(ConfigError, match=message):
        load_workflow(_workflow(tmp_path, model))


def test_frozen_model_is_plain_json_and_gives_the_worker_ref(tmp_path):
    wf = load_workflow(_workflow(tmp_path, "{checkpoint: demo, patch: 256}"),
                       choice=ModelChoice(overrides=parse_overrides(["bands=[red, green, blue]"])))
    frozen = wf.model.identify()
    assert frozen == json.loads(json.dumps(frozen))  # what config.json will read back: no tuples
    assert frozen["overrides"] == {"bands": ["red", "green", "blue"]} and "threads" not in frozen
    ref = model_ref(frozen, threads=3)
    assert ref == ModelRef(frozen["checkpoint"], patch=256, threads=3,
                           overrides={"bands": ["red", "green", "blue"]})


def test_a_missing_checkpoint_says_how_to_give_one():
    with pytest.raises(ConfigError, match=r"pass --checkpoint PATH or set model\.checkpoint"):
        ModelOptions().checkpoint_path()


def test_empty_kwargs_and_overrides_keys_mean_none(tmp_path):
    wf = load_workflow(_workflow(tmp_path, "{checkpoint: demo, kwargs: , overrides: }"))
    assert wf.model.kwargs == () and wf.model.overrides == ()
    assert wf.model.identify()["overrides"] == {}


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("text", "message"), [
    ("run: {retries: two}", "run.retries: expected an integer, got 'two'"),
    ("run: {max_in_flight: 0}", "run.max_in_flight: expected an integer >= 1, got 0"),
    ("grid: {chunk: 512.5}", "grid.chunk: expected an integer, got 512.5"),
    ("grid: {origin: [1, east]}", "grid.origin: expected a list of 2 numbers, got [1, 'east']"),
    ("grid: [512]", "grid: expected a mapping of KEY: VALUE, got [512]"),
    ("model: {checkpoint: demo, confidence: maybe}", "model.confidence: expected true or false, got 'maybe'"),
    ("model: {checkpoint: demo, width: wide}", "model.width: expected an integer (or nothing), got 'wide'"),
    ("model: {checkpoint: demo, overrides: {mean: 127}}", "model.overrides.mean: expected a list of numbers"),
    ("model: {checkpoint: demo, overrides: {bandz: [r]}}",
     "unknown key(s) ['bandz'] in model.overrides (did you mean 'bands'?)"),
    ("mosaic: {crs: 4326}", "mosaic.crs: expected a string, got 4326"),
])
def test_wrong_types_name_the_file_and_the_key(tmp_path, text, message):
    path = _write(tmp_path, "wf.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_workflow(path)
    assert str(err.value).startswith(path) and message in str(err.value)


def test_override_flag_values_are_typed():
    with pytest.raises(ConfigError, match=r"--override: width: expected an integer \(or nothing\)"):
        parse_overrides(["width=two"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sinolc_dist.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(("option", "name", "text", "needles"), [
    ("--workflow", "wf.yaml", "model: {checkpoint: demo}\nrun: {retries: two}\n",
     ["wf.yaml: run.retries: expected an integer, got 'two'"]),
    ("--cluster", "p.yaml", "local:\n  n_workers: two\n",
     ["p.yaml: cluster profile key 'n_workers' must be an integer >= 1 (got 'two')"]),
    ("--cluster", "p.yaml", "local:\n  n_wrokers: 2\n",
     ["p.yaml: unknown key(s) ['n_wrokers'] in the local cluster profile", "valid keys:", "n_workers"]),
])
def test_bad_configuration_fails_before_the_run_directory_is_touched(tmp_path, option, name, text, needles):
    """Issue 15 point 4: `run` refuses a wrong type or an unknown key in one line, writing nothing."""
    args = ["--workflow", "demo", option, _write(tmp_path, name, text)]
    proc = _cli("run", "--region", "bbox:114.0,30.0,114.01,30.01", *args, "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "r").exists()


def test_shipped_workflows_and_profiles_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./workflows or ./cluster here: the package's own copies
    assert load_workflow("demo").grid.chunk > 0
    assert load_profile("local")[0] == "local"
