"""The run path end to end on a small scene: real Zarr, LocalCluster, GeoTIFF."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from conftest import SMALL_SCENE, run_output

from sinolc_dist.deliver.cog import CogReport
from sinolc_dist.demo.run import prepare_demo
from sinolc_dist.errors import ChunkFailures, ConfigError, InputError, RunDirError
from sinolc_dist.grid import Grid
from sinolc_dist.legend import SINOLC
from sinolc_dist.regions.region import resolve_region
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, FAILED, StateStore
from sinolc_dist.stages import infer, status
from sinolc_dist.stages.dispatch import RunReport


@pytest.mark.slow
def test_run_resume_and_mosaic(small_run):
    rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
    summary = infer.run(req)
    assert summary.planned == 12 and summary.report.done == 12 and summary.skipped == 0
    out = run_output(rundir, scene.window)
    assert (out > 0).all()
    # The mosaic: grid CRS and transform, nodata 0, colour table, pixels equal the store's.
    (cog,) = summary.mosaics
    assert cog.valid
    grid = rundir.read_config().grid
    with rasterio.open(cog.path) as src:
        assert src.crs == grid.pyproj_crs
        assert src.nodata == 0
        assert src.colormap(1)[9] == SINOLC.colormap()[9]
        assert src.transform == grid.window_transform(scene.window)
        assert np.array_equal(src.read(1), out)
    mtime = cog.path.stat().st_mtime
    # A second run does no inference and keeps the up-to-date mosaic.
    again = infer.run(req)
    assert again.report.done == 0 and again.skipped == 12
    assert cog.path.stat().st_mtime == mtime
    assert np.array_equal(run_output(rundir, scene.window), out)


@pytest.mark.slow
def test_failed_chunks_then_rerun(small_run):
    rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
    grid = Grid.from_dict(Grid().to_dict() | {"chunk": 128, "block": 64, "shard": 2})
    reference = rundir.root.parent / "ref"
    # Corrupt one input shard file: the chunks reading it fail, the others complete.
    shard_files = sorted((rundir.input / "image" / "c").rglob("*"))
    victim = next(p for p in shard_files if p.is_file())
    good = victim.read_bytes()
    victim.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(ChunkFailures, match="rerun"):
        infer.run(req)
    report = status.status(rundir.root)
    assert report.total[FAILED] > 0 and report.total[DONE] > 0
    # One corrupt file is one error group, not one per chunk reading it.
    assert [g.chunks for g in report.errors] == [report.total[FAILED]]
    # Repair the input and rerun only the failed chunks.
    victim.write_bytes(good)
    summary = infer.rerun(rundir.root, failed=True)
    assert summary.report.done == report.total[FAILED]
    with StateStore(rundir.state) as state:
        assert state.count()[DONE] == 12
    # Equal to an uninterrupted run.
    ref = RunDir(reference)
    ref_scene = prepare_demo(ref, str(small_run["wf"]), SMALL_SCENE)
    infer.run(infer.RunRequest(ref.root, str(ref_scene.region_file), req.workflow,
                                     req.cluster, mosaic=False))
    assert np.array_equal(run_output(rundir, scene.window), run_output(ref, scene.window))
    assert grid.chunk == 128


def test_incompatible_resume_is_refused(small_run, tmp_path):
    rundir, req = small_run["rundir"], small_run["req"]
    wf = infer.load_workflow(req.workflow)
    rundir.freeze(infer._frozen_config(req, wf, wf.model.identify(), SINOLC, resolve_region(req.region)),
                  infer.COMPATIBLE)
    other = infer.RunRequest(rundir.root, "bbox:113,30,114,31", req.workflow, req.cluster)
    with pytest.raises(RunDirError, match="region"):
        infer.run(other)


def test_an_order_naming_a_province_outside_the_run_fails_before_any_write(small_run, tmp_path):
    req = replace(small_run["req"], run_dir=tmp_path / "never", order="Xinjiang")
    with pytest.raises(ConfigError, match=r"run\.order: 新疆维吾尔自治区|run\.order: .*Xinjiang.* is not in"):
        infer.run(req)
    assert not (tmp_path / "never").exists()


def test_the_order_is_recorded_and_may_change_on_resume(small_run):
    req = small_run["req"]
    (prov,) = infer.check_run(req).region.provinces
    first = infer.check_run(replace(req, order=prov.name_en)).config
    assert first.order == prov.adcode and infer.check_run(req).config.order == "province"
    rundir = small_run["rundir"]
    rundir.freeze(first, infer.COMPATIBLE)
    assert rundir.freeze(infer.check_run(replace(req, order="row-major")).config,
                         infer.COMPATIBLE).order == "row-major"


def test_missing_input_is_a_clear_error(tmp_path, small_run):
    req = infer.RunRequest(tmp_path / "empty", "湖北", small_run["req"].workflow, small_run["req"].cluster)
    with pytest.raises(InputError, match="no input imagery"):
        infer.run(infer.RunRequest(req.run_dir, str(small_run["scene"].region_file),
                                         req.workflow, req.cluster))


def test_unknown_workflow_and_cluster(small_run):
    req = small_run["req"]
    with pytest.raises(ConfigError, match="unknown workflow"):
        infer.run(infer.RunRequest(req.run_dir, req.region, "nope", req.cluster))
    with pytest.raises(ConfigError, match="unknown cluster"):
        infer.run(infer.RunRequest(req.run_dir, req.region, req.workflow, "nope"))


@pytest.mark.slow
def test_rerun_one_chunk_and_a_province(small_run):
    rundir, scene, req = small_run["rundir"], small_run["scene"], small_run["req"]
    infer.run(infer.RunRequest(**{**req.__dict__, "mosaic": False}))
    before = run_output(rundir, scene.window)
    with StateStore(rundir.state) as state:
        first = state.chunk_ids(DONE)[0]
    summary = infer.rerun(rundir.root, chunks=[first.key])
    assert summary.report.done == 1
    assert np.array_equal(run_output(rundir, scene.window), before)
    assert infer.rerun(rundir.root, province="湖北").report.done == 12
    with pytest.raises(RunDirError, match="not in this run's plan"):
        infer.rerun(rundir.root, chunks=["c/0/0"])


@pytest.mark.slow
def test_confidence_output_and_auto_patch(small_run, tmp_path, reference):
    wf = tmp_path / "conf.yaml"
    wf.write_text(small_run["wf"].read_text().replace("patch: 128, device: cpu}",
                                                      "patch: auto, device: cpu, confidence: true}"))
    req = infer.RunRequest(**{**small_run["req"].__dict__, "workflow": str(wf), "mosaic": False})
    infer.run(req)
    rundir, window = small_run["rundir"], small_run["scene"].window
    # Each worker chose its patch side and the driver's log says which, and why.
    log = (rundir.logs / "driver.log").read_text()
    assert re.search(r"worker \d+: patch (64|128) px for 128 px chunks on cpu \(calibrated: 64: ", log)
    assert np.array_equal(run_output(rundir, window), reference)  # the same classes as with patch 128
    import zarr

    conf = zarr.open_group(rundir.output, mode="r")["confidence"]
    rows, cols = window.slices()
    values = conf[rows, cols]
    classes = run_output(rundir, window)
    assert values.dtype == np.uint8
    assert (values[classes > 0] > 0).all()
    assert values.max() <= 255


@pytest.mark.slow
def test_plain_state_dict_with_overrides(small_run, tmp_path, random_checkpoint):
    import torch

    from sinolc_dist.errors import CheckpointError
    from sinolc_dist.models.checkpoint import load_checkpoint
    from sinolc_dist.stages.workflow import ModelChoice, parse_overrides

    plain = tmp_path / "plain.pt"
    torch.save(load_checkpoint(random_checkpoint).state_dict, plain)
    base = {**small_run["req"].__dict__, "checkpoint": str(plain), "mosaic": False}
    spec = parse_overrides(["mean=[127.5, 127.5, 127.5]", "std=[64, 64, 64]"])
    with pytest.raises(CheckpointError, match=r"give --override mean=\[...\] std=\[...\]"):
        infer.run(infer.RunRequest(**base))  # a state_dict carries no normalisation
    with pytest.raises(CheckpointError, match="use --width 16"):
        infer.run(infer.RunRequest(**{**base, "model": ModelChoice(width=64, overrides=spec)}))
    assert not small_run["rundir"].state.exists()  # refused before anything was written
    summary = infer.run(infer.RunRequest(**{**base, "model": ModelChoice(overrides=spec)}))
    assert summary.report.done == 12
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["depth=3"])


def test_driver_checks_a_gpu_model_without_a_gpu(small_run, tmp_path):
    # A workflow for GPU workers: the driver (no GPU here) still validates the model and
    # writes its run directory; only the workers need the device.
    wf = tmp_path / "gpu.yaml"
    wf.write_text(small_run["wf"].read_text().replace("device: cpu}", "device: cuda, amp: bf16}"))
    req = infer.RunRequest(**{**small_run["req"].__dict__, "workflow": str(wf), "mosaic": False,
                                 "run_dir": tmp_path / "gpu-run"})
    with pytest.raises(InputError, match="no input imagery"):  # got past the model check
        infer.run(req)
    assert infer.load_workflow(str(wf)).model.device == "cuda"


def test_summary_lines_count_speed_mosaics_notes_and_the_log(tmp_path):
    cog = CogReport(tmp_path / "mosaics" / "420000.tif", 640, 480, 2_500_000, True, [2, 4], 1.5, {})
    summary = infer.RunSummary(RunDir(tmp_path / "run"), skipped=4,
                               report=RunReport(done=6, failed=2, seconds=4.0, pixels=400_000),
                               mosaics=[cog], notes=["2 chunk(s) were recomputed"])
    assert infer.summary_lines(summary) == [
        "inference: 6 chunk(s) done, 2 failed, 4 skipped (already done), 4.0 s, 100,000 px/s",
        f"output store: {tmp_path / 'run' / 'output.zarr'}",
        f"mosaic: {tmp_path / 'mosaics' / '420000.tif'} (640×480 px, 2.50 MB, COG valid: True)",
        "note: 2 chunk(s) were recomputed",
        f"log: {tmp_path / 'run' / 'logs' / 'driver.log'}",
    ]
