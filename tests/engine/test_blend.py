from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
import zarr
from conftest import input_store, small_grid

from benchmarks.authors_test_py import blended_like_test_py
from sinolc_dist.engine.blend import authors_weights, chip_windows
from sinolc_dist.engine.inference import (
    ModelRef,
    ShardTask,
    _prefetch,
    check_halo,
    classify_chunk_with_confidence,
    load_model,
    normalise,
    run_shard,
)
from sinolc_dist.grid import ChunkId, Window
from sinolc_dist.legend import CHESAPEAKE
from sinolc_dist.models.checkpoint import load_checkpoint
from sinolc_dist.models.loader import check_model
from sinolc_dist.rundir import stores
from tests.engine.test_inference import engine_classes, whole_raster_classes
from tests.models.authors_layout import paraformer_layout, random_state_dict, save_plain

CHIP_NET = "tests.models.plugin_factory:chip_net"


def run_all_shards(grid, image, ref, tmp_path, confidence=False):
    """The engine through real Zarr stores: every shard by run_shard; returns classes (and confidence)."""
    input_store(tmp_path / "in.zarr", grid, image)
    out = stores.create_store(tmp_path / "out.zarr", grid, "output")
    conf = None
    if confidence:
        group = zarr.open_group(tmp_path / "out.zarr", mode="r+", zarr_format=3)
        conf = group.create_array("confidence", shape=grid.size, dtype="uint8", fill_value=0,
                                  chunks=(grid.block, grid.block), shards=(grid.shard_px, grid.shard_px))
    shards = sorted({grid.shard_of(c) for c in grid.chunks_in(grid.full_window)})
    for sid in shards:
        chunks = tuple(grid.chunks_in(grid.shard_window(sid)))
        results = run_shard(ShardTask(grid, sid, chunks, str(tmp_path / "in.zarr"),
                                      str(tmp_path / "out.zarr"), ref))
        assert all(r.ok for r in results), [r.error for r in results]
    classes = stores.read_window(out, grid.full_window)
    return (classes, np.asarray(conf[...])) if confidence else classes


@pytest.mark.parametrize(("chunk_win", "window"), [
    (Window(64, 64, 128, 128), Window(53, 53, 139, 139)),      # interior, halo 11
    (Window(256, 256, 300, 260), Window(224, 224, 300, 260)),  # thin chunk at the raster's corner
    (Window(0, 0, 300, 260), Window(0, 0, 300, 260)),          # the whole raster
])
def test_chips_cover_the_chunk_inside_the_window(chunk_win, window):
    covered = np.zeros((300, 260), bool)
    chips = chip_windows(chunk_win, window, Window(0, 0, 300, 260), chip=64, stride=32)
    assert len(set(chips)) == len(chips)
    for c in chips:
        assert window.row0 <= c.row0 < c.row1 <= window.row1 and window.col0 <= c.col0 < c.col1 <= window.col1
        assert c.height == min(64, window.height) and c.width == min(64, window.width)
        covered[c.slices()] = True
    assert covered[chunk_win.slices()].all()


def test_gaussian_blend_of_l2hnet_agrees_with_exact(random_checkpoint, random_image):
    exact = whole_raster_classes(load_model(ModelRef(str(random_checkpoint), patch=32)), random_image)
    model = load_model(ModelRef(str(random_checkpoint), blend="gaussian", chip_size=64))
    assert model.blending and model.radius == 11
    for chunk, halo in ((64, 11), (160, 11), (320, 0)):  # 320: one chunk, the whole raster
        agree = (engine_classes(model, small_grid(chunk=chunk, halo=halo), random_image) == exact).mean()
        # Measured: 99.950 % (64), 99.968 % (160), 99.976 % (whole); a trained checkpoint on the
        # demo scene: 99.992-99.999 %.
        assert agree >= 0.999, (chunk, agree)


def test_blending_accepts_a_small_halo_through_zarr(random_checkpoint, random_image, tmp_path):
    grid = small_grid(chunk=64, halo=4)
    ref = ModelRef(str(random_checkpoint), blend="gaussian", chip_size=64)
    check_halo(grid, load_model(ref))  # no error: the user asked for blending
    got = run_all_shards(grid, random_image, ref, tmp_path)
    assert np.array_equal(got, engine_classes(load_model(ref), grid, random_image))


def test_chip_model_blends_with_bounded_chips(random_image, tmp_path):
    model = load_model(ModelRef("", plugin=CHIP_NET))
    assert model.blending and model.chip_px == 64 and model.stride_px == 32 and model.radius is None
    whole = engine_classes(model, small_grid(chunk=320, halo=0), random_image)
    model.module.seen.clear()
    # halo >= chip - stride: chips fit unshifted except within a chip of the raster's bottom/right edge.
    grid = small_grid(chunk=64, halo=32)
    a = run_all_shards(grid, random_image, ModelRef("", plugin=CHIP_NET), tmp_path)
    assert set(model.module.seen) == {(1, 3, 64, 64)}  # only chips ever reach the model
    b = engine_classes(model, small_grid(chunk=96, halo=32), random_image)
    for got in (a, b):
        assert (got > 0).all()
        assert np.array_equal(got[:300 - 64, :260 - 64], whole[:300 - 64, :260 - 64])
    # Measured: 0.29 % (64 px chunks) and 0.75 % (96 px) of all pixels differ, all in thin edge chunks
    # (4 px wide, 12 px tall) that cannot see the chips a whole-raster pass uses there.
    assert (a != whole).mean() < 0.005 and (b != whole).mean() < 0.01


def test_confidence_is_written_where_the_array_exists(random_checkpoint, random_image, tmp_path):
    image = random_image.copy()
    image[:, 100:110, 50:60] = 0
    grid = small_grid(chunk=64)
    ref = ModelRef(str(random_checkpoint), patch=32, confidence=True)
    classes, conf = run_all_shards(grid, image, ref, tmp_path, confidence=True)
    model = load_model(ref)
    assert np.array_equal(classes, whole_raster_classes(model, image))
    x, valid = normalise(image, model.spec, torch.device("cpu"))
    with torch.inference_mode():
        top = torch.softmax(model.module(x[None], valid[None, None])[0], dim=0).amax(dim=0)  # nodata: an edge
    expected = ((top * 255).round() * valid).numpy().astype(int)
    assert np.abs(conf.astype(int) - expected).max() <= 1
    assert (conf[100:110, 50:60] == 0).all() and (conf[valid.numpy()] >= 255 // 11).all()
    # Blended confidence comes from the blended probabilities; classes are unchanged by asking for it.
    blend = load_model(ModelRef("", plugin=CHIP_NET))
    cid = ChunkId(1, 1)
    hw = grid.halo_window(cid)
    codes, bconf = classify_chunk_with_confidence(blend, grid, cid, image[:, hw.slices()[0], hw.slices()[1]])
    assert codes.shape == bconf.shape == (64, 64) and bconf.dtype == np.uint8 and (bconf > 0).all()


def test_prefetch_reads_at_most_two_chunks_ahead():
    submitted: list[int] = []

    class Reader:
        def submit(self, fn, item):
            submitted.append(item)
            fut = torch.futures.Future()
            fut.set_result(fn(item))
            return fut

    for i, (item, fut) in enumerate(_prefetch(Reader(), lambda c: c * 10, range(6))):
        assert item == i and fut.wait() == i * 10
        assert len(submitted) <= i + 3  # the current chunk plus at most two ahead


# Paraformer as the authors' training saves it, with 64 px chips (4 × 4 tokens; the same keys as 224).
PARA_SPEC = {"arch": "paraformer", "bands": ["red", "green", "blue", "nir"], "legend": "chesapeake",
             "mean": [117.67, 130.39, 121.52, 162.92], "std": [39.25, 37.82, 24.24, 60.03]}
PARA_SIZE = (128, 160)


@pytest.fixture(scope="module")
def authors_paraformer(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("paraformer") / "paraformer.pth"
    return str(save_plain(path, random_state_dict(paraformer_layout(chip=64), seed=21)))


@pytest.fixture(scope="module")
def four_bands() -> np.ndarray:
    rng = np.random.default_rng(7)
    base = rng.integers(1, 255, size=(4, 16, 20)).repeat(8, 1).repeat(8, 2)
    return np.clip(base + rng.integers(-25, 25, size=base.shape), 1, 255).astype(np.uint8)


def test_test_py_blending_weights():
    w = authors_weights(224, 224, 224, 112, torch.device("cpu"))
    assert w[55, 100] == 1 and w[56, 56] == 5 and w[167, 167] == 5 and w[168, 100] == 1


@pytest.mark.slow
@pytest.mark.parametrize("blend", ["gaussian", "authors"])
def test_paraformer_chunked_equals_one_blended_pass(authors_paraformer, four_bands, tmp_path, blend):
    ref = ModelRef(authors_paraformer, overrides=PARA_SPEC, blend=blend, chip_stride=32, batch=1)
    model = load_model(ref)
    assert model.blending and model.chip_px == 64 and model.stride_px == 32 and model.radius is None
    one_pass = engine_classes(model, small_grid(PARA_SIZE, chunk=160, block=32, halo=0), four_bands)
    # Chunks a multiple of the stride, halo = chip - stride: each chunk sees every chip covering it.
    chunked = run_all_shards(small_grid(PARA_SIZE, chunk=64, block=32, halo=32), four_bands, ref, tmp_path)
    assert np.array_equal(chunked, one_pass)
    assert len(np.unique(chunked)) > 5


def assert_equal_but_near_ties(got: np.ndarray, expected: np.ndarray, probs: np.ndarray) -> None:
    """Equal class maps, except where the reference's top two probabilities tie within float32 noise."""
    top2 = np.sort(probs, axis=0)[-2:]
    tie = (top2[1] - top2[0]) < 1e-5
    differ = got != expected
    assert not (differ & ~tie).any(), int((differ & ~tie).sum())
    assert differ.mean() < 1e-4  # measured: none


@pytest.mark.slow
def test_authors_blending_equals_the_authors_test_py(authors_paraformer, four_bands, tmp_path):
    network = load_checkpoint(authors_paraformer, PARA_SPEC).build()
    probs = blended_like_test_py(network.heads, four_bands, PARA_SPEC["mean"], PARA_SPEC["std"], classes=17,
                                 chip=64, stride=32)
    grid = small_grid(PARA_SIZE, chunk=64, block=32, halo=32)
    # test.py writes the argmax index: channel 0 written as 0 (nodata) with classes [0, 1, ..., 16].
    legend = tmp_path / "index.yaml"
    legend.write_text(yaml.safe_dump({"classes": {i: {"name": f"index {i}", "color": [i, i, i]}
                                                  for i in range(1, 17)}}))
    as_index = {**PARA_SPEC, "classes": list(range(17)), "legend": str(legend)}
    ref = ModelRef(authors_paraformer, overrides=as_index, blend="authors", chip_stride=32, batch=1)
    got = run_all_shards(grid, four_bands, ref, tmp_path / "index")
    assert_equal_but_near_ties(got, probs.argmax(axis=0).astype(np.uint8), probs)
    # The Chesapeake legend drops channel 0 (never chosen) and writes the NLCD codes.
    chesapeake = ModelRef(authors_paraformer, overrides=PARA_SPEC, blend="authors", chip_stride=32, batch=1)
    one_chunk = small_grid(PARA_SIZE, chunk=160, block=32, halo=0)
    got = engine_classes(load_model(chesapeake), one_chunk, four_bands)
    codes = np.array(CHESAPEAKE.channels[1:], np.uint8)
    assert_equal_but_near_ties(got, codes[probs[1:].argmax(axis=0)], probs[1:])
    assert 0 not in got


def test_batched_chips_give_the_same_classes(authors_paraformer, four_bands):
    grid = small_grid(PARA_SIZE, chunk=160, block=32, halo=0)
    one = engine_classes(load_model(ModelRef(authors_paraformer, overrides=PARA_SPEC, chip_stride=32,
                                             batch=1)), grid, four_bands)
    batched = load_model(ModelRef(authors_paraformer, overrides=PARA_SPEC, chip_stride=32, batch=6))
    assert (engine_classes(batched, grid, four_bands) == one).mean() > 0.9999


def test_paraformer_blends_like_test_py_unless_told_otherwise_and_a_short_halo_is_noted(authors_paraformer):
    ref = ModelRef(authors_paraformer, overrides=PARA_SPEC)
    model = load_model(ref)
    assert model.blend == "authors" and model.stride_px == 32  # half a 64 px chip
    assert load_model(ModelRef(authors_paraformer, overrides=PARA_SPEC, blend="gaussian")).blend == "gaussian"
    spec, notes = check_model(ref, small_grid(PARA_SIZE, chunk=64, block=32, halo=32))
    assert spec.legend == "chesapeake" and notes == []
    _, notes = check_model(ref, small_grid(PARA_SIZE, chunk=64, block=32, halo=8))
    assert len(notes) == 1 and "grid.halo >= 32" in notes[0] and "--workflow paraformer" in notes[0]
