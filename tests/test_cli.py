"""The command line as users meet it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
import yaml

from sinolc_dist.demo.run import prepare_demo
from sinolc_dist.engine.inference import normalise
from sinolc_dist.imagery.pixels import SourceReadError
from sinolc_dist.legend import CHESAPEAKE
from sinolc_dist.models.checkpoint import load_checkpoint
from sinolc_dist.rundir import stores
from sinolc_dist.rundir.layout import RunDir
from tests.models.authors_layout import (
    l2hnet_layout,
    paraformer_keys_only,
    paraformer_layout,
    random_state_dict,
    save_plain,
)
from tests.stages.test_status import CHUNKS, GRID, fill_state


def sinolc(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sinolc_dist.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ")
    text = " ".join(lines)
    for needle in needles:
        assert needle in text


def test_help_explains_commands():
    proc = sinolc("--help")
    assert proc.returncode == 0
    for command in ("demo", "plan", "run", "status", "rerun", "mosaic"):
        assert command in proc.stdout


def test_unknown_region(tmp_path):
    proc = sinolc("run", "--region", "Hubie", "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown region 'Hubie'", "did you mean Hubei")
    assert not (tmp_path / "r").exists()  # nothing written for a bad argument


def test_missing_run_dir(tmp_path):
    proc = sinolc("status", "--run-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(proc, "not a run directory", "--run-dir")


def test_status_of_an_ingest_only_run_dir_as_text_and_json(tmp_path):
    rundir = RunDir(tmp_path / "run").create()
    (rundir.root / "ingest.json").write_text(json.dumps({"grid": GRID.to_dict()}))
    bad = str(SourceReadError("/data/bad.tif", "not a TIFF"))
    fill_state(rundir.ingest_state, {c: bad for c in CHUNKS[:3]}, CHUNKS[3:10])
    text = sinolc("status", "--run-dir", str(rundir.root))
    assert text.returncode == 0, text.stderr
    for line in ("driver: none running (no driver has recorded a start here)",
                 "chunks computed more than once: 0",
                 "throughput and ETA: none (no driver is running)",
                 "3 × [ingest] unreadable imagery <file> :: not a TIFF — file /data/bad.tif"):
        assert line in text.stdout
    as_json = sinolc("status", "--json", "--run-dir", str(rundir.root))
    report = json.loads(as_json.stdout)
    assert report["stage"] == "ingest" and report["total"]["failed"] == 3 and report["recomputed"] == 0
    assert report["driver"] == {"alive": False, "pid": None, "host": None, "started": None, "last": None}
    assert report["errors"] == [{"stage": "ingest", "cause": "unreadable imagery <file> :: not a TIFF",
                                 "file": "/data/bad.tif", "chunks": 3}]
    assert report["eta_hours"] is None and report["waiting_for_ingest"] == {}


@pytest.mark.parametrize("content", [b"", b"not a torch file at all"])
def test_unreadable_checkpoint(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    proc = sinolc("run", "--region", "湖北", "--checkpoint", str(bad), "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, f"checkpoint {bad} cannot be read")


def test_missing_checkpoint(tmp_path):
    proc = sinolc("run", "--region", "湖北", "--checkpoint", str(tmp_path / "none.pt"),
                  "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "does not exist")


def test_plan_json_for_a_province(tmp_path):
    proc = sinolc("plan", "--region", "420000", "--json", "--run-dir", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    import json

    plan = json.loads(proc.stdout)
    assert plan["total"]["chunks"] > 10000
    assert (tmp_path / "p" / "plan.json").is_file()
    assert (tmp_path / "p" / "state.sqlite").is_file()


# A state_dict saved by the authors' training code: what a new user arrives with.
MEAN_STD = ["--override", "mean=[121.0,126.0,110.0]", "std=[41.0,38.0,35.0]"]  # one flag, two pairs


@pytest.fixture(scope="module")
def theirs(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("theirs")
    sd = random_state_dict(l2hnet_layout(), seed=1)
    files = {
        "l2hnet": sd,
        "backbone": {k: v for k, v in sd.items() if not k.startswith("head.")},
        "l2hnet17": random_state_dict(l2hnet_layout(classes=17), seed=2),
        "paraformer": paraformer_keys_only(),
    }
    return {name: str(save_plain(folder / f"{name}.pth", state)) for name, state in files.items()}


@pytest.mark.parametrize(("file", "args", "needles"), [
    ("paraformer", ["--arch", "l2hnet", *MEAN_STD], ["is a Paraformer state_dict", "use --arch paraformer"]),
    ("l2hnet", ["--arch", "paraformer", *MEAN_STD], ["is an L2HNet state_dict", "use --arch l2hnet"]),
    ("l2hnet", ["--width", "128", *MEAN_STD], ["has width 64", "use --width 64"]),
    ("l2hnet", ["--override", "bands=[red,green,blue,nir]", "mean=[1,2,3,4]", "std=[1,2,3,4]"],
     ["takes 3 input bands", "--override bands=[...] mean=[...] std=[...] with 3 values each"]),
    ("backbone", MEAN_STD, ["without a classification head (no head.weight)"]),
    ("l2hnet17", MEAN_STD, ["has 17 output channels", "the legend gives 11 class codes",
                            "--override classes=[drop,1,2,...]"]),
    ("l2hnet", ["--arch", "unet", *MEAN_STD], ["unknown --arch 'unet'; known: l2hnet, paraformer"]),
    ("l2hnet", ["--arch", "l2hnet"], ["plain state_dict, which carries no input normalisation",
                                      "--override mean=[...] std=[...]"]),
    ("l2hnet", ["--override", "classes=[drop,drop]", *MEAN_STD[1:]], ["drops every output channel"]),
])
def test_a_state_dict_that_does_not_fit_is_one_line_and_writes_nothing(theirs, tmp_path, file, args, needles):
    proc = sinolc("run", "--region", "湖北", "--checkpoint", theirs[file], "--run-dir", str(tmp_path / "r"),
                  *args)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "r").exists()


def test_run_help_shows_the_model_flags():
    proc = sinolc("run", "--help")
    assert proc.returncode == 0
    for flag in ("--arch", "--width", "--plugin", "--kwargs", "--override", "drop"):
        assert flag in proc.stdout


SMALL_WORKFLOW = """
grid: {crs: china-albers, resolution: 1.0, chunk: 128, block: 64, shard: 2, halo: 16}
model: {patch: 64, device: cpu}
run: {retries: 0, max_in_flight: 4}
"""
ONE_WORKER = "local: {n_workers: 1, threads_per_worker: 1, torch_threads: 2, memory_limit: 6GiB}\n"


def scene_run(tmp_path, workflow: str, size: tuple[int, int]):
    """A run directory holding a synthetic scene, its region file, a workflow and a one-worker profile."""
    (tmp_path / "wf.yaml").write_text(workflow)
    (tmp_path / "one.yaml").write_text(ONE_WORKER)
    rundir = RunDir(tmp_path / "run")
    scene = prepare_demo(rundir, str(tmp_path / "wf.yaml"), size)
    args = ["run", "--region", str(scene.region_file), "--workflow", str(tmp_path / "wf.yaml"),
            "--cluster", str(tmp_path / "one.yaml"), "--run-dir", str(rundir.root)]
    return rundir, scene, args


@pytest.mark.slow
def test_the_authors_l2hnet_runs_as_saved_with_one_command(theirs, tmp_path):
    legend = tmp_path / "mine.yaml"
    colours = {c: [10 * c, 200 - 10 * c, 7 * c] for c in range(1, 12)}
    legend.write_text(yaml.safe_dump({"name": "mine", "classes": {
        c: {"name": f"class {c}", "color": rgb} for c, rgb in colours.items()}}))
    rundir, scene, args = scene_run(tmp_path, SMALL_WORKFLOW, (256, 384))
    proc = sinolc(*args, "--checkpoint", theirs["l2hnet"], "--arch", "l2hnet", *MEAN_STD, f"legend={legend}")
    assert proc.returncode == 0, proc.stderr
    grid = rundir.read_config().grid
    got = stores.read_window(stores.open_array(rundir.output, grid), scene.window)
    # The scene lies inside the grid with nodata around it: its classes are the authors' network
    # over the scene alone, edges included.
    spec = {"mean": [121.0, 126.0, 110.0], "std": [41.0, 38.0, 35.0], "legend": str(legend)}
    ckpt = load_checkpoint(theirs["l2hnet"], spec)
    image = stores.read_window(stores.open_array(rundir.input, grid), scene.window)
    x, _ = normalise(image, ckpt.spec, torch.device("cpu"))
    with torch.inference_mode():
        alone = ckpt.build()(x[None])[0].argmax(0).numpy() + 1
    assert np.array_equal(got, alone)
    # The legend's names and colours are in the COG and the statistics.
    (cog,) = (rundir.root / "mosaics").glob("*.tif")
    with rasterio.open(cog) as src:
        assert {c: src.colormap(1)[c][:3] for c in colours} == {c: tuple(v) for c, v in colours.items()}
        assert json.loads(src.tags()["CLASS_NAMES"])["3"] == "class 3"
        assert "mine legend" in src.descriptions[0]
    assert "class 11" in (rundir.root / "stats" / "classes_km2.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_the_authors_paraformer_runs_as_saved_with_one_command(tmp_path):
    rgb = {"transformer.embeddings.hybrid_model.startconv.weight": [64, 3, 3, 3]}
    layout = {**paraformer_layout(chip=64), **rgb}
    theirs = save_plain(tmp_path / "paraformer.pth", random_state_dict(layout, seed=4))
    workflow = SMALL_WORKFLOW.replace("chunk: 128, block: 64, shard: 2, halo: 16",
                                      "chunk: 64, block: 32, shard: 2, halo: 32") \
        .replace("patch: 64,", "blend: authors, chip_stride: 32, batch: 2,")
    rundir, scene, args = scene_run(tmp_path, workflow, (128, 128))
    proc = sinolc(*args, "--checkpoint", str(theirs), "--arch", "paraformer", *MEAN_STD, "legend=chesapeake")
    assert proc.returncode == 0, proc.stderr
    grid = rundir.read_config().grid
    got = stores.read_window(stores.open_array(rundir.output, grid), scene.window)
    assert set(np.unique(got)) <= set(CHESAPEAKE.codes)  # channel 0 dropped: never written
    (cog,) = (rundir.root / "mosaics").glob("*.tif")
    with rasterio.open(cog) as src:
        assert src.colormap(1)[95][:3] == CHESAPEAKE.colours()[95]
        assert np.array_equal(src.read(1), got)
