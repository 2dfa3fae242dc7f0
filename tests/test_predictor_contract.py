"""One predictor contract for every kind (predict/base.py), the typed model cards
(predict/cards.py) and the one place that turns images into frames (io/frames.py)."""

from __future__ import annotations

import inspect
import os
import shutil

import numpy as np
import pytest

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.io.frames import as_frames, grey_frame, image_axes
from blastoseg.kinds import KINDS, get_kind, runnable_kinds
from blastoseg.predict import cards
from blastoseg.predict.base import (
    Predictor,
    PredictorBase,
    clear_predictor_cache,
    load_predictor,
)
from blastoseg.progress import Cancelled
from blastoseg.weights import ModelCard, WeightsError, resolve_model


def _frame(size: int = 96, seed: int = 0) -> np.ndarray:
    """A textured disc on a noisy background (something every kind can run on)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2
    img = 100 + 10 * rng.standard_normal((size, size)) + disc * 60 * rng.random((size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


# kinds with a shipped model (the count kind has none yet; tests/test_count_kind.py runs the
# same contract on a tiny count model)
@pytest.fixture(scope="module",
                params=[k for k in runnable_kinds() if get_kind(k).default_model])
def predictor(request):
    return load_predictor(None, "cpu", kind=request.param)


# --- the contract, for every kind -------------------------------------------------------------

def test_every_runnable_kind_loads_its_shipped_model(predictor):
    spec = get_kind(predictor.kind)
    assert isinstance(predictor, Predictor) and isinstance(predictor, PredictorBase)
    assert isinstance(predictor, spec.predictor_class())
    assert predictor.entry.name == spec.default_model
    assert isinstance(predictor.card, spec.card_class())
    assert predictor.device_name.startswith("CPU")


def test_a_frame_gives_one_result_a_stack_a_list(predictor):
    frame = _frame()
    one = predictor.predict(frame)
    assert not isinstance(one, list) and "frame" not in one.meta
    seen = []
    two = predictor.predict(np.stack([frame, _frame(seed=1)]),
                            progress=lambda d, t: seen.append((d, t)))
    assert isinstance(two, list) and len(two) == 2
    assert [r.meta["frame"] for r in two] == [0, 1]
    assert type(two[0]) is type(one)
    # done counts up to total, whatever the kind's unit of work
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(
        d for d, _ in seen)
    # grey RGB is the same frame
    rgb = predictor.predict(np.repeat(frame[..., None], 3, axis=-1))
    assert type(rgb) is type(one)


def test_iter_predict_streams_or_collects(predictor):
    frames = [_frame(), _frame(seed=2)]
    streamed = []
    work = predictor.iter_predict(frames, on_result=lambda i, r: streamed.append(i))
    steps = list_steps(work)
    assert steps.value == [] and streamed == [0, 1]
    collected = list_steps(predictor.iter_predict(np.stack(frames)))
    assert len(collected.value) == 2
    with pytest.raises(InvalidImageError, match="sequence of frames"):
        predictor.iter_predict(frames[0])


def test_cancel_stops_the_run(predictor):
    with pytest.raises(Cancelled):
        predictor.predict(np.stack([_frame(), _frame(seed=3)]), cancel=lambda: True)


def test_bad_images_are_refused_alike(predictor):
    for bad, words in ((np.zeros((0, 96)), "empty"), (np.zeros((96, 96), bool), "dtype"),
                       (np.zeros((2, 3, 96, 96)), "focal plane")):
        with pytest.raises(InvalidImageError, match=words):
            predictor.predict(bad)
    nan = _frame().astype(np.float32)
    nan[3, 3] = np.nan
    with pytest.raises(InvalidImageError, match="frame 1 has 1 NaN"):
        predictor.predict(np.stack([_frame(), nan]))


class Steps:
    value: list


def list_steps(work) -> Steps:
    out = Steps()
    while True:
        try:
            next(work)
        except StopIteration as stop:
            out.value = stop.value
            return out


# --- the cached loader -------------------------------------------------------------------------

def test_load_predictor_caches_and_reloads_changed_files(tmp_path):
    entry = resolve_model("overlap-default")
    weights = tmp_path / "ov.safetensors"
    shutil.copy2(entry.weights_path, weights)
    shutil.copy2(entry.card_path, tmp_path / "ov.json")
    clear_predictor_cache()
    first = load_predictor(str(weights), "cpu")
    assert first.kind == "overlap"
    assert load_predictor(str(weights), "cpu") is first
    assert load_predictor(str(weights), "cpu", batch_size=2) is not first  # other options
    # an option named at its constructor's default is the same predictor
    default_batch = inspect.signature(type(first)).parameters["batch_size"].default
    assert load_predictor(str(weights), "cpu", batch_size=default_batch) is first
    card = tmp_path / "ov.json"
    st = card.stat()
    os.utime(card, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # re-calibrated
    again = load_predictor(str(weights), "cpu")
    assert again is not first and load_predictor(str(weights), "cpu") is again
    with pytest.raises(WeightsError, match="'overlap' model"):
        load_predictor(str(weights), "cpu", kind="amodal")
    with pytest.raises(BlastosegError, match="cannot segment"):
        load_predictor("pix2pix-brightfield", "cpu")
    with pytest.raises(BlastosegError, match="a kind"):
        load_predictor(None, "cpu")
    clear_predictor_cache()


# --- typed cards -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [k for k, v in KINDS.items() if v.default_model])
def test_typed_cards_read_the_shipped_cards(kind):
    spec = get_kind(kind)
    card = spec.card_class().from_card(resolve_model(spec.default_model).card)
    assert card.name == spec.default_model


def test_typed_card_values():
    bf = cards.BrightfieldCard.from_card(resolve_model("brightfield-default").card)
    # brightfield-default still says "nms_iou": read as mask_nms_iou
    assert bf.mask_nms_iou == 0.8 and bf.max_side == 128 and bf.scale == 0.25
    assert bf.seunet == bf.model.seunet_config
    am = cards.AmodalCard.from_card(resolve_model("amodal-default").card)
    assert am.mask_nms_iou == 0.6 and am.use_localisation
    # version 3 carries its layer rule, switched off (docs/counting_analysis.md)
    assert am.layer_rule.source == "layers" and am.use_layer_rule is False
    ov = cards.OverlapCard.from_card(resolve_model("overlap-default").card)
    assert set(ov.thresholds) == set(ov.seunet.heads) and ov.percentiles == (1.0, 99.8)
    # a card that says nothing gets the defaults
    empty = cards.BrightfieldCard.from_card(ModelCard(name="e", kind="brightfield"))
    assert (empty.score_threshold, empty.mask_nms_iou, empty.max_side) == (0.3, 0.8, 1024)
    assert cards.brightfield_postprocess({"mask_nms_iou": None, "nms_iou": 0.5})[
        "mask_nms_iou"] is None


@pytest.mark.parametrize("kind, config, words", [
    ("brightfield", {"postprocess": {"score_threshold": 2}}, "score_threshold"),
    ("brightfield", {"postprocess": {"largest_component": "yes"}}, "true or false"),
    ("brightfield", {"inference": {"max_side": -1}}, "max_side"),
    ("overlap", {"seunet": {"heads": ["nope"]}}, "unknown head"),
    ("overlap", {"preprocess": {"percentiles": [50, 10]}}, "percentiles"),
    ("overlap", {"threshold": {"overlap": 1.5}}, "overlap threshold"),
    ("amodal", {"model": {"backbone": "vgg"}}, "backbone"),
    ("amodal", {"postprocess": {"mask_nms_iou": "x"}}, "mask_nms_iou"),
    ("shape_prior", {"vqvae": {"grid_size": 5}}, "power of two"),
    ("pix2pix", {"pix2pix": {"bogus": 1}}, "bogus"),
])
def test_bad_card_values_name_the_key(kind, config, words):
    with pytest.raises(BlastosegError, match=words):
        get_kind(kind).card_class().from_card(ModelCard(name="bad", kind=kind, config=config))


# --- frames ------------------------------------------------------------------------------------

def test_as_frames_shapes():
    frames, stack = as_frames(np.zeros((20, 30)))
    assert frames.shape == (1, 20, 30) and not stack
    assert as_frames(np.zeros((20, 30, 3)))[0].shape == (1, 20, 30, 3)  # an RGB frame
    assert as_frames(np.zeros((20, 30, 1)))[1] is False
    frames, stack = as_frames(np.zeros((3, 20, 30)))
    assert frames.shape == (3, 20, 30) and stack
    assert as_frames(np.zeros((2, 20, 30, 4)))[0].shape == (2, 20, 30, 4)
    # napari's rgb flag decides where a guess would not
    assert as_frames(np.zeros((4, 20, 3)), rgb=True, min_side=1)[1] is False
    assert as_frames(np.zeros((4, 20, 30)), rgb=False)[1] is True
    with pytest.raises(InvalidImageError, match="colour"):
        as_frames(np.zeros((20, 30)), rgb=True)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((0, 30)), "empty"),
    (np.zeros((20, 30), bool), "dtype"),
    (np.array([["a"] * 10] * 10), "dtype"),
    (np.zeros((2, 3, 20, 30)), "focal plane"),
    (np.zeros((1, 2, 3, 20, 30)), "shape"),
    (np.zeros((4, 4)), "at least 8"),
])
def test_as_frames_refuses(bad, words):
    with pytest.raises(InvalidImageError, match=words):
        as_frames(bad)


def test_grey_frame():
    rgb = np.stack([np.arange(100).reshape(10, 10)] * 3, axis=-1).astype(np.uint8)
    grey = grey_frame(rgb)
    assert grey.dtype == np.float32 and grey.shape == (10, 10)
    np.testing.assert_array_equal(grey, rgb[..., 0])
    assert grey_frame(np.dstack([rgb, np.zeros((10, 10), np.uint8)])).shape == (10, 10)  # RGBA
    assert grey_frame(rgb[..., :1]).shape == (10, 10)
    nan = np.zeros((10, 10))
    nan[2, 2] = np.nan
    with pytest.raises(InvalidImageError, match="the frame has 1 NaN"):
        grey_frame(nan)
    with pytest.raises(InvalidImageError, match="frame 4 has 1 NaN"):
        grey_frame(nan, 4)
    with pytest.raises(InvalidImageError, match="dtype"):
        grey_frame(np.zeros((10, 10), bool))
    with pytest.raises(InvalidImageError, match="2D frame"):
        grey_frame(np.zeros((3, 10, 10)))
    with pytest.raises(InvalidImageError, match="at least 8"):
        grey_frame(np.zeros((4, 10)))
    assert grey_frame(np.zeros((4, 10)), min_side=1).shape == (4, 10)


def test_image_axes():
    assert image_axes((20, 30)) == ""
    assert image_axes((20, 30, 3), rgb=True) == ""
    assert image_axes((5, 20, 30)) == "T"
    assert image_axes((5, 20, 30), axes_hint="ZYX") == "Z"
    assert image_axes((5, 20, 30), axes_hint="ZYX", focal_planes=False) == "T"
    assert image_axes((5, 20, 30, 3), rgb=True) == "T"
    assert image_axes((2, 5, 20, 30)) == "TZ"
    with pytest.raises(InvalidImageError, match="focal planes"):
        image_axes((2, 5, 20, 30), focal_planes=False)
    with pytest.raises(InvalidImageError, match="shape"):
        image_axes((20,))
