from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import input_store, small_grid

from sinolc_dist.engine.inference import ModelRef, ShardTask, classify_chunk, load_model, normalise, run_shard
from sinolc_dist.errors import ConfigError
from sinolc_dist.grid import ChunkId, ShardId
from sinolc_dist.models.checkpoint import load_checkpoint
from sinolc_dist.models.plugins import measure_receptive_radius
from sinolc_dist.rundir import stores
from tests.models.authors_layout import l2hnet_layout, random_state_dict, save_plain

#: What a plain state_dict of the authors' L2HNet needs besides its weights.
AUTHORS_SPEC = {"arch": "l2hnet", "mean": [121.0, 126.0, 110.0], "std": [41.0, 38.0, 35.0]}


def whole_raster_classes(model, image: np.ndarray) -> np.ndarray:
    """One pass of the checkpoint's own network (not the engine's folded copy) over the whole raster.

    Nodata is the raster's edge (the network's mask): each layer zero-pads around it.
    """
    network = load_checkpoint(model.ref.checkpoint, dict(model.ref.overrides)).build()
    x, valid = normalise(image, model.spec, torch.device("cpu"))
    with torch.inference_mode():
        logits = network(x[None], valid[None, None])
    return (model.lut[logits[0].argmax(0)] * valid).numpy()


@pytest.fixture(scope="module")
def authors_l2hnet(tmp_path_factory) -> str:
    """A plain state_dict in the authors' layout (width 64, out_conv1..3 kept), as their training saves it."""
    path = tmp_path_factory.mktemp("authors") / "l2hnet.pth"
    return str(save_plain(path, random_state_dict(l2hnet_layout(downsampling=True), seed=11)))


def engine_classes(model, grid, image) -> np.ndarray:
    out = np.zeros(grid.size, np.uint8)
    for cid in grid.chunks_in(grid.full_window):
        hw = grid.halo_window(cid)
        w = grid.chunk_window(cid)
        out[w.slices()] = classify_chunk(model, grid, cid, image[:, hw.row0:hw.row1, hw.col0:hw.col1])
    return out


@pytest.mark.parametrize("chunk", [32, 64, 96, 160])
def test_chunked_equals_whole_raster(random_checkpoint, random_image, chunk):
    model = load_model(ModelRef(str(random_checkpoint), patch=32))
    grid = small_grid(chunk=chunk, block=32, halo=11)
    ref = whole_raster_classes(model, random_image)
    got = engine_classes(model, grid, random_image)
    # Class maps equal pixel for pixel, chunks cutting through the raster's edges included.
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("patch", [64, "auto"])
def test_class_map_does_not_depend_on_the_patch_size(random_checkpoint, random_image, patch):
    grid = small_grid(chunk=128, block=32)
    ref = engine_classes(load_model(ModelRef(str(random_checkpoint), patch=32)), grid, random_image)
    assert np.array_equal(engine_classes(load_model(ModelRef(str(random_checkpoint), patch=patch)), grid,
                                         random_image), ref)


def test_output_is_bitwise_independent_of_chunking(random_checkpoint, random_image):
    model = load_model(ModelRef(str(random_checkpoint), patch=32))
    a = engine_classes(model, small_grid(chunk=64, block=32), random_image)
    b = engine_classes(model, small_grid(chunk=96, block=32), random_image)
    assert a.tobytes() == b.tobytes()


def test_halo_too_small_is_refused(random_checkpoint, tmp_path, random_image):
    grid = small_grid(halo=10)
    input_store(tmp_path / "in.zarr", grid, random_image)
    stores.create_store(tmp_path / "out.zarr", grid, "output")
    task = ShardTask(grid, ShardId(0, 0), (ChunkId(0, 0),), str(tmp_path / "in.zarr"),
                     str(tmp_path / "out.zarr"), ModelRef(str(random_checkpoint), patch=32))
    with pytest.raises(ConfigError, match="receptive radius 11"):
        run_shard(task)


def test_nodata_propagates_and_empty_chunks_skip(random_checkpoint, random_image, tmp_path):
    grid = small_grid()
    image = random_image.copy()
    image[:, :64, :] = 0          # first chunk row entirely nodata
    image[:, 100:110, 50:60] = 0  # a hole
    input_store(tmp_path / "in.zarr", grid, image)
    out = stores.create_store(tmp_path / "out.zarr", grid, "output")
    ref = ModelRef(str(random_checkpoint), patch=32)
    chunks = tuple(c for c in grid.chunks_in(grid.shard_window(ShardId(0, 0))))
    results = run_shard(ShardTask(grid, ShardId(0, 0), chunks, str(tmp_path / "in.zarr"),
                                  str(tmp_path / "out.zarr"), ref))
    assert all(r.ok for r in results)
    got = stores.read_window(out, grid.shard_window(ShardId(0, 0)))
    assert (got[:64] == 0).all()
    assert (got[100:110, 50:60] == 0).all()
    assert (got[64:100] > 0).all()


def test_wrong_band_count_is_reported_per_chunk(random_checkpoint, tmp_path):
    grid = small_grid()
    arr = stores.create_store(tmp_path / "in.zarr", grid, "input", bands=4)
    stores.write_window(arr, grid.full_window, np.full((4, *grid.size), 9, np.uint8))
    stores.create_store(tmp_path / "out.zarr", grid, "output")
    task = ShardTask(grid, ShardId(0, 0), (ChunkId(0, 0),), str(tmp_path / "in.zarr"),
                     str(tmp_path / "out.zarr"), ModelRef(str(random_checkpoint), patch=32))
    (result,) = run_shard(task)
    assert not result.ok
    assert "4 bands but the model expects 3" in result.error


def test_float_imagery_nan_inf_and_out_of_range_values(random_checkpoint, random_image):
    model = load_model(ModelRef(str(random_checkpoint), patch=32))
    grid = small_grid()
    image = random_image.astype(np.float32)
    image[0, 10, 10] = np.nan          # a NaN band: nodata
    image[:, 20, 20] = np.inf          # infinite: nodata
    image[1, 30, 30] = -np.inf
    image[:, 40:44, 40:44] = -7.5      # all bands negative: valid (not exactly 0), clipped to 0
    image[2, 50:54, 50:54] = -1.0      # one band below range: clipped to 0
    image[:, 60:64, 60:64] = 300.0     # overshoot: clipped to 255
    image[:, 70, 70] = 0.0             # all bands 0: nodata
    # The same scene written the way the rule reads it: nodata as zeros, values clipped.
    same = image.copy()
    for r, c in ((10, 10), (20, 20), (30, 30)):
        same[:, r, c] = 0.0
    same[2, 50:54, 50:54] = 0.0
    same[:, 60:64, 60:64] = 255.0

    x, valid = normalise(image, model.spec, torch.device("cpu"))
    assert torch.isfinite(x).all()
    nodata = [(10, 10), (20, 20), (30, 30), (70, 70)]
    assert not any(valid[r, c] for r, c in nodata) and int((~valid).sum()) == len(nodata)
    mean = torch.tensor(model.spec.mean).view(-1, 1, 1)
    std = torch.tensor(model.spec.std).view(-1, 1, 1)
    assert torch.allclose(x[:, 40:44, 40:44], ((0 - mean) / std).expand(3, 4, 4))
    assert torch.allclose(x[:, 60:64, 60:64], ((255 - mean) / std).expand(3, 4, 4))

    got = engine_classes(model, grid, image)
    assert np.array_equal(got, engine_classes(model, grid, same))  # NaN/inf never leak into neighbours
    assert np.array_equal(got, whole_raster_classes(model, image))
    assert all(got[r, c] == 0 for r, c in nodata) and int((got == 0).sum()) == len(nodata)


@pytest.mark.parametrize("patch", [32, "auto"])
def test_an_image_inside_the_grid_equals_a_pass_over_the_image_alone(authors_l2hnet, random_image, patch):
    # A GeoTIFF whose edge lies inside the grid, nodata around it, chunks cutting through its edges:
    # inside it the classes are what a user of the authors' code gets from their network over the
    # image alone (each layer zero-padding at the image's edge), edges included.
    model = load_model(ModelRef(authors_l2hnet, patch=patch, overrides=AUTHORS_SPEC))
    rows, cols = slice(37, 251), slice(23, 219)
    image = np.zeros_like(random_image)
    image[:, rows, cols] = random_image[:, rows, cols]
    got = engine_classes(model, small_grid(chunk=64), image)
    network = load_checkpoint(authors_l2hnet, AUTHORS_SPEC).build()
    x, _ = normalise(random_image[:, rows, cols], model.spec, torch.device("cpu"))
    with torch.inference_mode():
        alone = model.lut[network(x[None])[0].argmax(0)].numpy()
    assert np.array_equal(got[rows, cols], alone)
    outside = np.ones(got.shape, bool)
    outside[rows, cols] = False
    assert (got[outside] == 0).all()


@pytest.mark.parametrize("chunk", [32, 64, 160])
def test_a_nodata_hole_is_an_edge_and_chunks_stay_exact(authors_l2hnet, random_image, chunk):
    model = load_model(ModelRef(authors_l2hnet, patch=32, overrides=AUTHORS_SPEC))
    image = random_image.copy()
    image[:, 100:131, 50:77] = 0  # a hole cut by chunk edges
    image[:, 280:, :40] = 0       # and the raster's corner
    got = engine_classes(model, small_grid(chunk=chunk), image)
    assert np.array_equal(got, whole_raster_classes(model, image))
    assert (got[100:131, 50:77] == 0).all() and (got[280:, :40] == 0).all()


def test_the_authors_l2hnet_loaded_as_saved_has_radius_11(authors_l2hnet):
    # Through the worker's own path (--checkpoint theirs.pth --arch l2hnet): the engine's folded copy
    # and the network as built from the file both reach exactly 11 px.
    model = load_model(ModelRef(authors_l2hnet, overrides=AUTHORS_SPEC))
    network = load_checkpoint(authors_l2hnet, AUTHORS_SPEC).build()
    assert model.radius == 11 and model.masks and not hasattr(model.module, "out_conv1")
    assert measure_receptive_radius(model.module, bands=3, size=41) == 11
    assert measure_receptive_radius(network, bands=3, size=41) == 11
