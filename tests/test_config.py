from __future__ import annotations

import json

import pytest

from sinolc_dist.config import ModelOptions, load_workflow, model_ref, parse_overrides
from sinolc_dist.errors import ConfigError
from sinolc_dist.models.loader import ModelRef


@pytest.mark.parametrize("name", ["demo", "cn", "cn-geographic"])
def test_shipped_workflows_load_with_auto_patches(name):
    wf = load_workflow(name)
    assert wf.model.patch == "auto"
    assert isinstance(wf.model, ModelRef)


def _workflow(tmp_path, model: str) -> str:
    path = tmp_path / "wf.yaml"
    path.write_text("grid: {crs: china-albers, chunk: 512, block: 256}\nmodel: " + model + "\n")
    return str(path)


@pytest.mark.parametrize(("model", "message"), [
    ("{checkpoint: demo, patchsize: 256}", r"unknown key\(s\) \['patchsize'\] in .*valid keys: .*'patch'"),
    ("{checkpoint: demo, threads: 4}", r"unknown key\(s\) \['threads'\]"),  # the cluster profile's
    ("{checkpoint: demo, amp: fp8}", r"model\.amp must be one of none, bf16, fp16, got 'fp8'"),
    ("{checkpoint: demo, patch: 8}", r"model\.patch must be 'auto' or a side of at least 16 px"),
    ("{checkpoint: demo, blend: median}", r"blend must be one of none, gaussian"),
])
def test_bad_model_section_is_refused(tmp_path, model, message):
    with pytest.raises(ConfigError, match=message):
        load_workflow(_workflow(tmp_path, model))


def test_frozen_model_is_plain_json_and_gives_the_worker_ref(tmp_path):
    wf = load_workflow(_workflow(tmp_path, "{checkpoint: demo, patch: 256}"),
                       overrides=parse_overrides(["bands=[red, green, blue]"]))
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
