"""Steady framing over a time-lapse (predict/steady_framing.py): the running median of the
localiser's circles, its votes, its notes and its laziness, then through the predictors."""

from __future__ import annotations

import numpy as np
import pytest

from blastoseg.predict import localise
from blastoseg.predict.amodal import AmodalPredictor
from blastoseg.predict.embryo_box import CUT_BY_EDGE, DISAGREE, UNSTEADY, EmbryoBox
from blastoseg.predict.embryo_spec import FramingError
from blastoseg.predict.steady_framing import SteadyLocaliser, check_window, steady_box

SHAPE = (120, 160)


def _box(cx, cy, r, conf=0.9, note="", source="localised"):
    return EmbryoBox(cx=float(cx), cy=float(cy), radius=float(r), confidence=conf,
                     image_shape=SHAPE, source=source, note=note, method="auto")


def test_median_ignores_one_wrong_frame_and_frames_without_an_embryo():
    boxes = [_box(80, 60, 40), _box(82, 61, 41), _box(20, 20, 90),  # the rim, once
             EmbryoBox.full_frame(SHAPE, note="no embryo found"), _box(81, 59, 39)]
    out = steady_box(boxes, boxes[2])
    assert (out.cx, out.cy, out.radius) == (80.5, 59.5, 40.5)
    assert out.source == "localised" and not out.unsure
    assert out.method == "auto, steadied over 4 frames"
    # a frame where nothing was found gets the neighbours' circle
    out = steady_box(boxes, boxes[3])
    assert out.found and out.radius == 40.5
    # nothing found anywhere: the frame's own box
    empty = [EmbryoBox.full_frame(SHAPE)] * 3
    assert steady_box(empty, empty[1]) is empty[1]


def test_low_confidence_boxes_do_not_vote():
    boxes = [_box(80, 60, 40), _box(10, 10, 90, conf=0.1), _box(10, 10, 90, conf=0.1)]
    out = steady_box(boxes, boxes[1], min_confidence=0.15)
    assert (out.cx, out.radius) == (80, 40)
    assert steady_box(boxes, boxes[1]).radius == 90  # with every box voting


def test_disagreeing_neighbours_make_the_box_unsure_and_frame_notes_stay():
    # half the frames here, half there: the median agrees with nobody's majority
    boxes = [_box(40, 60, 30), _box(120, 60, 30), _box(40, 60, 30), _box(120, 60, 30)]
    out = steady_box(boxes, _box(40, 60, 30, note=f"{CUT_BY_EDGE}; {DISAGREE}"))
    assert UNSTEADY in out.note and out.unsure
    assert CUT_BY_EDGE in out.note and DISAGREE not in out.note
    calm = steady_box(boxes[:1] * 3, _box(40, 60, 30, note=DISAGREE))
    assert calm.note == "" and not calm.unsure


def test_localiser_runs_once_per_frame_and_ahead_by_half_a_window():
    calls = []
    circles = [_box(80 + t, 60, 40) for t in range(20)]

    def locate(t):
        calls.append(t)
        return circles[t]

    steady = SteadyLocaliser(20, locate, window=5)
    first = steady.box(0)
    assert calls == [0, 1, 2] and first.cx == 81  # median of frames 0-2
    assert steady.box(1).cx == 81.5 and calls == [0, 1, 2, 3]
    for t in range(2, 18):
        assert steady.box(t).cx == 80 + t  # a drift is followed
    assert (steady.box(18).cx, steady.box(19).cx) == (97.5, 98)  # the window ends early
    assert calls == list(range(20))  # each frame localised once
    assert len(steady._boxes) <= 2 * 5  # old frames forgotten
    with pytest.raises(IndexError):
        steady.box(20)


def test_window_checks():
    assert check_window(None) == 0 and check_window(9) == 9
    for bad in (-1, 2.5, "9", True):
        with pytest.raises(ValueError, match="window"):
            check_window(bad)
    # window 0 or 1: the frame's own box
    steady = SteadyLocaliser(3, lambda t: _box(80 + 10 * t, 60, 40), window=1)
    assert [steady.box(t).cx for t in range(3)] == [80, 90, 100]


# --- through the predictors -----------------------------------------------------------------

def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 20 * rng.random(SHAPE)).astype(np.uint8)


@pytest.fixture()
def jumpy_localiser(monkeypatch):
    """The localiser finds the embryo at (60, 50, r 30) except in frame 2 of a stack, where it
    frames something at (120, 80, r 45); records how often it ran."""
    calls = []

    def fake(image, *, radius_px=None, **kw):
        calls.append(radius_px)
        odd = float(np.asarray(image).mean()) > 200  # frame 2 is the bright one
        return _box(120, 80, 45) if odd else _box(60, 50, 30)

    monkeypatch.setattr(localise, "locate_embryo", fake)
    return calls


def _stack() -> np.ndarray:
    stack = np.stack([_frame(s) for s in range(5)])
    stack[2] = np.clip(stack[2].astype(int) + 110, 0, 255)
    return stack


def test_amodal_predictor_steadies_a_stack(tiny_models, jumpy_localiser):
    predictor = AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.0)
    stack = _stack()
    alone = predictor.predict(stack)
    assert alone[2].meta["embryo"]["cx"] == 120 and len(jumpy_localiser) == 5
    jumpy_localiser.clear()
    steadied = predictor.predict(stack, steady=5)
    assert [r.meta["embryo"]["cx"] for r in steadied] == [60] * 5
    assert "steadied over" in steadied[2].meta["embryo"]["method"]
    assert len(jumpy_localiser) == 5  # each frame localised once
    # a user's circle wins in its frame and does not vote
    given = [None, None, (100, 70, 20), None, None]
    res = predictor.predict(stack, embryo=given, steady=5)
    assert [r.meta["embryo"]["source"] for r in res] == ["localised"] * 2 + ["given"] + [
        "localised"] * 2
    assert res[1].meta["embryo"]["cx"] == 60 and res[2].meta["embryo"]["cx"] == 100
    # nothing to steady: one frame, localisation off
    assert predictor.predict(stack[2], steady=5).meta["embryo"]["cx"] == 120
    assert predictor.predict(stack, steady=5, localise=False)[0].meta["embryo"][
        "source"] == "whole frame"
    with pytest.raises(FramingError, match="window"):
        predictor.predict(stack, steady=-3)


def test_count_and_fused_counters_steady_too(tiny_models, tiny_count, jumpy_localiser):
    from blastoseg.predict.count import CountPredictor
    from blastoseg.predict.fused_counter import FusedCounter

    stack = _stack()
    counter = CountPredictor("tiny-count", device="cpu")
    assert counter.predict(stack)[2].meta["embryo"]["cx"] == 120
    assert [r.meta["embryo"]["cx"] for r in counter.predict(stack, steady=5)] == [60] * 5
    fused = FusedCounter(AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.0),
                         counter)
    res = fused.predict(stack, steady=5)
    assert [r.meta["embryo"]["cx"] for r in res] == [60] * 5


# --- command line ---------------------------------------------------------------------------

def _write(path, data):
    import tifffile

    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def _framing_rows(out):
    import csv

    with open(out / "framing.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_segment_amodal_and_count_take_steady(tiny_models, tiny_count, jumpy_localiser,
                                              tmp_path, capsys):
    from blastoseg.cli import main

    stack = _write(tmp_path / "lapse.tif", _stack())
    assert main(["segment", "amodal", str(stack), "--out", str(tmp_path / "a"), "--model",
                 "tiny-amodal", "--device", "cpu", "--steady", "5"]) == 0
    assert "framing: localised in each frame, then steadied (the median circle of 5 frames)" in capsys.readouterr().out
    rows = _framing_rows(tmp_path / "a")
    assert {r["cx"] for r in rows} == {"60.0"}
    assert all("steadied over" in r["method"] for r in rows)  # framing.csv says how
    assert main(["segment", "count", str(stack), "--out", str(tmp_path / "c"), "--model",
                 "tiny-count", "--device", "cpu", "--steady", "5"]) == 0
    assert main(["segment", "amodal", str(stack), "--out", str(tmp_path / "b"), "--model",
                 "tiny-amodal", "--device", "cpu"]) == 0
    rows = _framing_rows(tmp_path / "b")
    assert sorted({r["cx"] for r in rows}) == ["120.0", "60.0"]
    assert not any("steadied" in r["method"] for r in rows)
    # separate pictures are framed each on its own, and the user is told
    folder = tmp_path / "pictures"
    folder.mkdir()
    import imageio.v3 as iio

    for name, k in (("embryo_a.png", 0), ("other_b.png", 2)):
        iio.imwrite(folder / name, _stack()[k])
    capsys.readouterr()
    assert main(["segment", "amodal", str(folder), "--out", str(tmp_path / "p"), "--model",
                 "tiny-amodal", "--device", "cpu", "--steady", "5"]) == 0
    assert "--steady is for a time-lapse" in capsys.readouterr().err
