"""Sliding-window tiling, the overlap predictor and the watershed baseline (S4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.io.frames import as_frames
from blastoseg.models.seunet import HEADS, SEUNet, SEUNetConfig
from blastoseg.predict.overlap import OverlapPredictor, OverlapResult, normalise_percentiles
from blastoseg.predict.tiling import (
    TilingError,
    count_windows,
    iter_sliding_window,
    sliding_window,
    window_grid,
)
from blastoseg.predict.watershed import watershed_from_result, watershed_instances
from blastoseg.progress import run_with_progress
from blastoseg.weights import ModelCard, WeightsError, register_model, save_weights
from blastoseg.weights import registry as registry_module

TINY = {"base_width": 4, "depth": 2, "se_reduction": 2, "decoder_width": 1.0}


def _smooth_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 3).astype(np.float32)


# --- tiling -------------------------------------------------------------------------------

def _pointwise(windows):
    return {"sq": windows[:, 0] ** 2, "neg": -windows}


def _box3(windows):
    """A fixed 3x3 mean filter (translation-equivariant, replicate borders)."""
    x = torch.from_numpy(windows)
    x = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    return {"mean": torch.nn.functional.avg_pool2d(x, 3, stride=1).numpy()}


def test_tiling_larger_than_window_matches_full_image_run():
    img = _smooth_image((150, 170))
    out = run_with_progress(iter_sliding_window(img, _pointwise, window=64, overlap=32,
                                                batch=3, multiple=16))
    # pointwise: exact, so offsets, padding and cropping are right
    assert set(out) == {"sq", "neg"}
    assert out["sq"].shape == img.shape and out["sq"].dtype == np.float32
    np.testing.assert_allclose(out["sq"], img ** 2, atol=1e-6)
    np.testing.assert_allclose(out["neg"], -img, atol=1e-6)
    # a fixed convolution: equal to the full-image run up to the window seams
    tiled = sliding_window(img, _box3, window=64, overlap=32, batch=4, multiple=16)["mean"]
    full = _box3(img[None, None])["mean"][0, 0]
    diff = np.abs(tiled - full)
    assert diff.max() < 0.02 and diff.mean() < 1e-3
    # away from the seams (and far from the image border) it is exact
    np.testing.assert_allclose(tiled[2:30, 2:30], full[2:30, 2:30], atol=1e-6)


def test_tiling_grid_and_progress_counts():
    (wh, ww), (ph, pw), starts = window_grid((150, 170), window=64, overlap=32, multiple=16)
    assert (wh, ww, ph, pw) == (64, 64, 150, 170)
    ys, xs = sorted({y for y, _ in starts}), sorted({x for _, x in starts})
    assert ys == [0, 32, 64, 86] and xs == [0, 32, 64, 96, 106]  # last windows end at border
    assert count_windows((150, 170), 64, 32, 16) == 20
    seen = []
    work = iter_sliding_window(np.zeros((150, 170)), _pointwise, window=64, overlap=32, batch=6)
    result = run_with_progress(work, lambda d, t: seen.append((d, t)))
    assert seen == [(6, 20), (12, 20), (18, 20), (20, 20)]
    assert result["sq"].shape == (150, 170)
    assert count_windows((64, 64), 64, 32) == 1
    assert count_windows((600, 600), 512, 256) == 4


def test_tiling_tiny_image_is_padded_and_cropped():
    img = _smooth_image((20, 13), seed=2)
    shapes = []

    def fn(windows):
        shapes.append(windows.shape)
        return _pointwise(windows)

    seen = []
    out = sliding_window(img, fn, window=64, overlap=32, multiple=16,
                         progress=lambda d, t: seen.append((d, t)))
    assert shapes == [(1, 1, 32, 16)]  # smallest multiple of 16 that holds the image
    assert seen == [(1, 1)]
    np.testing.assert_allclose(out["sq"], img ** 2, atol=1e-6)
    # reflect padding (not zeros) around the image
    seen_windows = []
    sliding_window(np.ones((5, 5)), lambda w: seen_windows.append(w) or {"a": w[:, 0]},
                   window=64, overlap=32, multiple=16)
    assert np.all(seen_windows[0] == 1.0)


def test_tiling_multichannel_and_errors():
    img = np.stack([_smooth_image((40, 50)), _smooth_image((40, 50), 1)])
    out = sliding_window(img, lambda w: {"diff": w[:, 0] - w[:, 1]}, window=32, overlap=16)
    np.testing.assert_allclose(out["diff"], img[0] - img[1], atol=1e-6)
    with pytest.raises(TilingError, match="smaller than the window"):
        sliding_window(img[0], _pointwise, window=32, overlap=32)
    with pytest.raises(TilingError, match="multiple of 16"):
        sliding_window(img[0], _pointwise, window=40, overlap=8, multiple=16)
    with pytest.raises(TilingError, match="expected"):
        sliding_window(img[0], lambda w: {"a": w[:, 0, :4]}, window=32, overlap=16)
    with pytest.raises(TilingError, match="dict"):
        sliding_window(img[0], lambda w: w, window=32, overlap=16)
    with pytest.raises(InvalidImageError, match="shape"):
        sliding_window(np.zeros((2, 3, 40, 40)), _pointwise, window=32, overlap=16)
    with pytest.raises(TilingError, match="batch"):
        sliding_window(img[0], _pointwise, window=32, overlap=16, batch=0)


# --- predictor ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_overlap(tmp_path_factory):
    """A tiny randomly initialised SE-U-Net registered as "tiny-overlap" (all heads) and
    "tiny-cyto" (cytoplasm only) under a temporary BLASTOSEG_HOME; yields (net, tmp)."""
    tmp = tmp_path_factory.mktemp("overlap")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLASTOSEG_HOME", str(tmp / "home"))
    bundled = tmp / "bundled"
    bundled.mkdir()
    mp.setattr(registry_module, "bundled_models_dir", lambda: bundled)
    torch.manual_seed(0)
    cfg = SEUNetConfig(**TINY)
    net = SEUNet(cfg).eval()
    config = {"seunet": cfg.to_dict(), "preprocess": {"percentiles": [1, 99.8]},
              "threshold": {"overlap": 0.3, "cytoplasm": 0.5, "nuclei": 0.5}}
    path = save_weights(net.state_dict(), tmp / "tiny-overlap.safetensors")
    register_model(path, ModelCard(name="tiny-overlap", kind="overlap", architecture="SEUNet",
                                   config=config))
    cyto_cfg = SEUNetConfig(heads=("cytoplasm",), **TINY)
    path = save_weights(SEUNet(cyto_cfg).state_dict(), tmp / "tiny-cyto.safetensors")
    register_model(path, ModelCard(name="tiny-cyto", kind="overlap", architecture="SEUNet",
                                   config={"seunet": cyto_cfg.to_dict()}))
    bad = {**config, "seunet": {**cfg.to_dict(), "heads": ["cytoplasm", "cells"]}}
    path = save_weights(net.state_dict(), tmp / "tiny-bad.safetensors")
    register_model(path, ModelCard(name="tiny-bad", kind="overlap", config=bad))
    path = save_weights(net.state_dict(), tmp / "tiny-amodal.safetensors")
    register_model(path, ModelCard(name="tiny-amodal", kind="amodal", config=config))
    yield net, tmp
    mp.undo()


@pytest.fixture(scope="module")
def predictor(tiny_overlap):
    return OverlapPredictor("tiny-overlap", device="cpu", window=64, overlap=32, batch_size=4)


def _cells_image(shape=(100, 90), seed=0):
    rng = np.random.default_rng(seed)
    img = np.full(shape, 1000.0)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in ((30, 30), (60, 55), (40, 70)):
        img += 800 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 15 ** 2)
    img += rng.normal(0, 50, shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def test_predict_frame_shapes_thresholds_and_progress(predictor):
    img = _cells_image()
    seen = []
    res = predictor.predict(img, progress=lambda d, t: seen.append((d, t)))
    assert isinstance(res, OverlapResult) and not res.is_stack
    assert res.heads == HEADS
    for head in HEADS:
        p = res.probabilities[head]
        assert p.shape == img.shape and p.dtype == np.float32
        assert 0.0 <= p.min() and p.max() <= 1.0
    assert res.thresholds == {"cytoplasm": 0.5, "nuclei": 0.5, "border": 0.5, "background": 0.5,
                              "overlap": 0.3}
    assert res.overlap_mask.dtype == bool
    np.testing.assert_array_equal(res.overlap_mask, res.probabilities["overlap"] >= 0.3)
    np.testing.assert_array_equal(res.mask("cytoplasm"), res.probabilities["cytoplasm"] >= 0.5)
    assert res.device_name.startswith("CPU") and res.model == "tiny-overlap"
    total = predictor.count_windows(img)
    assert total == 6  # 100 x 90 with 64 px windows every 32 px: y 0, 32, 36; x 0, 26
    assert seen == [(4, 6), (6, 6)]


def test_predict_one_window_equals_direct_model_run(tiny_overlap, predictor):
    net, _ = tiny_overlap
    img = _cells_image((64, 64), seed=3)
    res = predictor.predict(img)
    x = torch.from_numpy(normalise_percentiles(img.astype(np.float32), (1, 99.8)))[None, None]
    with torch.inference_mode():
        direct = net(x).probabilities()
    for head in HEADS:
        np.testing.assert_allclose(res.probabilities[head], direct[head][0, 0].numpy(),
                                   atol=1e-5)


def test_stack_rgb_and_dtype_variants(predictor):
    stack = np.stack([_cells_image((48, 80), seed=s) for s in range(3)])
    seen = []
    results = predictor.predict(stack, progress=lambda d, t: seen.append((d, t)))
    # one result per frame, like every predictor; from_frames stacks them
    assert len(results) == 3 and not any(r.is_stack for r in results)
    assert [r.meta["frame"] for r in results] == [0, 1, 2]
    res = OverlapResult.from_frames(results)
    assert res.is_stack and "frame" not in res.meta
    assert OverlapResult.from_frames(results[1]) is results[1]
    assert all(p.shape == (3, 48, 80) for p in res.probabilities.values())
    assert res.overlap_mask.shape == (3, 48, 80)
    per_frame = predictor.count_windows(stack[0])
    assert seen[-1] == (3 * per_frame, 3 * per_frame) == (predictor.count_windows(stack),) * 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    single = predictor.predict(stack[1])
    for head in HEADS:
        np.testing.assert_allclose(res.probabilities[head][1], single.probabilities[head],
                                   atol=1e-6)
        np.testing.assert_allclose(res.frame(1).probabilities[head],
                                   single.probabilities[head], atol=1e-6)
    assert len(list(res.frames())) == 3
    # grey RGB and a rescaled float copy give the same maps (per-image percentiles)
    rgb = np.repeat(stack[1][..., None], 3, axis=-1)
    scaled = stack[1].astype(np.float64) * 0.01 - 5.0
    for variant in (rgb, scaled, stack[1][..., None]):
        other = predictor.predict(variant)
        assert not other.is_stack
        np.testing.assert_allclose(other.probabilities["overlap"],
                                   single.probabilities["overlap"], atol=1e-5)


def test_image_without_cells_gives_maps_not_errors(predictor):
    for blank in (np.zeros((40, 40), np.uint8), np.full((40, 40), 7.5)):
        res = predictor.predict(blank)
        assert res.probabilities["cytoplasm"].shape == (40, 40)
        assert np.isfinite(res.probabilities["overlap"]).all()
    # the random tiny model starts with few overlaps (overlap_prior) on a blank field
    assert res.probabilities["overlap"].mean() < 0.3
    np.testing.assert_array_equal(normalise_percentiles(np.full((8, 8), 3.0)), 0.0)


@pytest.mark.parametrize("bad, words", [
    (np.full((32, 32), np.nan), "NaN"),
    (np.zeros((0, 32)), "empty"),
    (np.zeros((2, 3, 32, 32)), "focal plane"),
    (np.zeros((1, 2, 3, 32, 32)), "shape"),
    (np.zeros((4, 4)), "at least 8"),
    (np.zeros((32, 32), bool), "dtype"),
    (np.array([["a"] * 10] * 10), "dtype"),
])
def test_bad_inputs_raise_invalid_image_error(predictor, bad, words):
    with pytest.raises(InvalidImageError, match=words):
        predictor.predict(bad)


def test_nan_in_one_frame_of_a_stack_names_the_frame(predictor):
    stack = np.zeros((3, 32, 32), np.float32)
    stack[2, 5, 5] = np.inf
    with pytest.raises(InvalidImageError, match="frame 2 has 1 NaN or infinite"):
        predictor.predict(stack)
    frames, is_stack = as_frames(np.zeros((20, 30, 3)))
    assert frames.shape == (1, 20, 30, 3) and not is_stack


def test_models_and_options(tiny_overlap):
    cyto = OverlapPredictor("tiny-cyto", device="cpu", window=32, overlap=16)
    res = cyto.predict(_cells_image((40, 40)))
    assert res.heads == ("cytoplasm",) and res.overlap_mask is None
    custom = OverlapPredictor("tiny-overlap", device="cpu", window=64, overlap=32,
                              overlap_threshold=0.6)
    assert custom.thresholds["overlap"] == 0.6
    with pytest.raises(WeightsError, match="unknown head"):
        OverlapPredictor("tiny-bad", device="cpu")
    with pytest.raises(WeightsError, match="'amodal' model"):
        OverlapPredictor("tiny-amodal", device="cpu")
    with pytest.raises(WeightsError, match="no model named"):
        OverlapPredictor("no-such-model", device="cpu")
    with pytest.raises(BlastosegError, match="multiple of 4"):
        OverlapPredictor("tiny-overlap", device="cpu", window=66)
    with pytest.raises(BlastosegError, match="smaller than the window"):
        OverlapPredictor("tiny-overlap", device="cpu", window=64, overlap=64)
    with pytest.raises(BlastosegError, match="threshold"):
        OverlapPredictor("tiny-overlap", device="cpu", overlap_threshold=1.5)


# --- watershed baseline -------------------------------------------------------------------

def _discs(shape=(64, 96), centers=((32, 30), (32, 58)), r=15):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return [((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2 for cy, cx in centers]


def test_watershed_splits_two_touching_discs_with_two_nucleus_seeds():
    discs = _discs()
    assert (discs[0] & discs[1]).any()  # they touch (even overlap a little)
    cyto = np.maximum(*discs).astype(np.float32) * 0.9
    nuclei = np.maximum(*_discs(r=4)).astype(np.float32)
    inst = watershed_instances(cyto, nuclei, min_area=20)
    assert isinstance(inst, FrameInstances) and len(inst) == 2
    assert inst.coverage().max() == 1  # disjoint by construction
    np.testing.assert_array_equal(inst.masks.any(axis=0), cyto >= 0.5)
    for cy, cx in ((32, 30), (32, 58)):
        assert sum(m[cy, cx] for m in inst.masks) == 1
    owners = [int(np.argmax(inst.masks[:, 32, x])) for x in (30, 58)]
    assert owners[0] != owners[1]
    # the split is at the neck between the discs
    areas = inst.areas
    assert abs(int(areas[0]) - int(areas[1])) < 0.1 * areas.mean()
    np.testing.assert_allclose(inst.scores, 0.9, atol=1e-6)
    assert inst.meta["method"] == "seunet+watershed"


def test_watershed_fallback_seeds_without_nuclei():
    discs = _discs(centers=((32, 30), (32, 58), (12, 85)), r=15)
    cyto = np.maximum.reduce(discs).astype(np.float32)
    # no nuclei map at all: distance-transform peaks split the touching pair
    assert len(watershed_instances(cyto, None)) == 3
    # a nuclei map that misses one cell: that cell is still found
    nuclei = np.maximum(*_discs(r=4)).astype(np.float32)
    inst = watershed_instances(cyto, nuclei, basins="distance")
    assert len(inst) == 3 and inst.coverage().max() == 1
    # an elongated cell is one seed, not a row of them
    rect = np.zeros((40, 100), np.float32)
    rect[10:25, 5:95] = 1
    assert len(watershed_instances(rect, None)) == 1


def test_watershed_empty_small_and_bad_inputs():
    empty = watershed_instances(np.zeros((30, 30)), np.zeros((30, 30)))
    assert len(empty) == 0 and empty.shape == (30, 30)
    speck = np.zeros((30, 30))
    speck[5:8, 5:8] = 1
    assert len(watershed_instances(speck, None, min_area=20)) == 0
    assert len(watershed_instances(speck, None, min_area=5)) == 1
    with pytest.raises(InvalidImageError, match="shape"):
        watershed_instances(np.zeros((30, 30)), np.zeros((30, 31)))
    with pytest.raises(InvalidImageError, match="2D"):
        watershed_instances(np.zeros((2, 30, 30)))
    with pytest.raises(InvalidImageError, match="NaN"):
        watershed_instances(np.full((30, 30), np.nan))
    with pytest.raises(BlastosegError, match="cytoplasm_threshold"):
        watershed_instances(np.zeros((30, 30)), cytoplasm_threshold=2)


def test_watershed_from_result_frame_and_stack():
    discs = _discs()
    cyto = np.maximum(*discs).astype(np.float32)
    nuclei = np.maximum(*_discs(r=4)).astype(np.float32)
    overlap = (discs[0] & discs[1]).astype(np.float32)
    res = OverlapResult(probabilities={"cytoplasm": cyto, "nuclei": nuclei, "overlap": overlap},
                        overlap_mask=overlap >= 0.3, thresholds={"cytoplasm": 0.5, "nuclei": 0.5,
                                                                 "overlap": 0.3},
                        device_name="CPU", model="m")
    inst = watershed_from_result(res)
    assert len(inst) == 2 and inst.meta["model"] == "m"
    np.testing.assert_array_equal(inst.occlusion, overlap)
    stacked = OverlapResult(probabilities={k: np.stack([v, np.zeros_like(v)])
                                           for k, v in res.probabilities.items()},
                            overlap_mask=None, thresholds=res.thresholds, device_name="CPU",
                            is_stack=True)
    both = watershed_from_result(stacked)
    assert [len(i) for i in both] == [2, 0]
    assert len(watershed_from_result(stacked, frame=0)) == 2
    no_cyto = OverlapResult(probabilities={"overlap": overlap}, overlap_mask=None,
                            thresholds={}, device_name="CPU")
    with pytest.raises(BlastosegError, match="cytoplasm map"):
        watershed_from_result(no_cyto)
