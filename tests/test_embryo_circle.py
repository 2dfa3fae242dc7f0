"""The Segment widget's embryo circle without Qt: circle <-> napari ellipse, the framing
state that becomes the predictor's ``embryo=``, and the diameter field's units."""

import math

import numpy as np
import pytest

from blastoseg.errors import BlastosegError
from blastoseg.napari import embryo_circle as ec
from blastoseg.predict.embryo_box import EmbryoBox


def test_circle_round_trips_through_an_ellipse():
    box = EmbryoBox(cx=120.5, cy=80.0, radius=40.0, image_shape=(200, 300))
    v = ec.ellipse_vertices(box, lead=(3.0,))
    assert v.shape == (4, 3) and (v[:, 0] == 3).all()
    # rows then columns, like napari: the box spans cy +- r and cx +- r
    assert v[:, 1].min() == 40 and v[:, 1].max() == 120
    assert v[:, 2].min() == 80.5 and v[:, 2].max() == 160.5
    lead, cx, cy, r = ec.circle_of_shape(v)
    assert lead == (3.0,) and (cx, cy, r) == pytest.approx((120.5, 80.0, 40.0))


def test_a_drawn_ellipse_becomes_the_circle_of_equal_area():
    # a 60 x 20 ellipse (semi-axes 30, 10) rotated by 30 degrees around (50, 70)
    a, b, th = 30.0, 10.0, math.radians(30)
    u = np.array([math.cos(th), math.sin(th)])
    w = np.array([-math.sin(th), math.cos(th)])
    c = np.array([50.0, 70.0])  # (row, col)
    corners = np.array([c - a * u - b * w, c + a * u - b * w, c + a * u + b * w,
                        c - a * u + b * w])
    lead, cx, cy, r = ec.circle_of_shape(corners, "ellipse")
    assert lead == () and (cy, cx) == pytest.approx((50.0, 70.0))
    assert math.pi * r * r == pytest.approx(math.pi * a * b)
    # a rectangle: the circle of its area around its centre
    rect = np.array([[0, 0], [0, 40], [10, 40], [10, 0]], float)
    _, cx, cy, r = ec.circle_of_shape(rect, "rectangle")
    assert (cy, cx) == pytest.approx((5, 20)) and math.pi * r * r == pytest.approx(400)
    with pytest.raises(ValueError, match="ellipse"):
        ec.circle_of_shape(np.array([[0, 0], [5, 5]], float), "line")


def test_shapes_layer_stretches_the_focal_plane_axis():
    scale, translate = ec.shapes_placement("TZ", 3, (1.0, 2.0, 0.5, 0.5), (0, 0, 0, 0))
    assert scale == (1.0, 6.0, 0.5, 0.5) and translate == (0.0, 2.0, 0.0, 0.0)
    # plane coordinate 0 maps to the data positions of planes 0..2 within +-0.5
    for z in range(3):
        assert abs((z * 2.0 - translate[1]) / scale[1]) < 0.5
    assert ec.shapes_placement("T", 1, (2.0, 1.0, 1.0), ()) == ((2.0, 1.0, 1.0), (0, 0, 0))
    assert ec.lead_of("TZ", 4) == (4.0, 0.0) and ec.lead_of("", 4) == ()


def test_diameter_in_pixels():
    assert ec.diameter_in_pixels(0, "um") is None  # 0 = automatic, no pixel size needed
    assert ec.diameter_in_pixels(240, "px") == 240
    assert ec.diameter_in_pixels(120, "um", pixel_size_um=0.5) == 240
    assert ec.diameter_in_pixels(120, "um", scale=0.25) == 480  # the layer's scale, in um
    import pint

    nm = pint.get_application_registry().Unit("nanometer")
    assert ec.diameter_in_pixels(120, "um", scale=500.0, scale_unit=nm) == pytest.approx(240)
    with pytest.raises(BlastosegError, match="give the diameter in px"):
        ec.diameter_in_pixels(120, "um")


def _located(cx, cy, r, conf):
    return EmbryoBox(cx=cx, cy=cy, radius=r, confidence=conf, image_shape=(100, 100))


def test_framing_state_gives_the_predictor_what_the_user_chose():
    st = ec.FramingState((100, 100), n_frames=4)
    st.set_auto(0, _located(50, 50, 30, 0.9))
    st.set_auto(1, _located(40, 40, 20, 0.25))   # below UNSURE_CONFIDENCE: a guess
    st.set_auto(2, EmbryoBox.full_frame((100, 100)))  # nothing found
    assert st.circle(0)[1] == "found" and st.circle(1)[1] == "unsure"
    assert st.circle(2)[1] == "unsure" and st.circle(3) == (None, None)
    assert st.circle(0, localise=False) == (None, None)
    assert st.embryo_for(range(4)) is None  # nothing chosen: the predictor localises
    assert not st.needs_confirmation(0) and st.needs_confirmation(1)
    assert st.needs_confirmation(2) and not st.needs_confirmation(1, localise=False)

    # the user confirms the guesses ("Segment anyway"): they are used as given
    st.confirmed.update({1, 2})
    per = st.embryo_for(range(4))
    assert per[0] is None and per[3] is None
    assert per[1].source == "given" and (per[1].cx, per[1].radius) == (40, 20)
    assert per[2].source == "whole frame"  # the whole frame, as shown

    # a circle for one frame, then one for the whole stack (which replaces it)
    mine = EmbryoBox.from_circle(45, 55, 33, (100, 100))
    st.set_user(3, mine, whole_stack=False)
    assert st.circle(3) == (mine, "given") and st.embryo_for(range(3, 4)) == [mine]
    stack = EmbryoBox.from_circle(50, 50, 35, (100, 100))
    st.set_user(0, stack, whole_stack=True)
    assert st.user == {} and st.embryo_for(range(4)) is stack
    assert all(st.circle(t) == (stack, "whole stack") for t in range(4))
    st.set_user(2, mine, whole_stack=False)  # one frame differs from the stack
    assert st.embryo_for(range(4)) == [stack, stack, mine, stack]
    st.clear_user(2)
    assert st.embryo_for(range(4)) is stack
    st.clear_user()
    assert st.embryo_for(range(4)) is None and st.stack is None and not st.confirmed


def test_framing_state_records_what_a_run_used():
    st = ec.FramingState((100, 100), n_frames=3)
    used = _located(50, 50, 30, 0.8).to_dict()
    st.update_from_result(0, {"embryo": used, "embryo_unsure": False})
    assert st.circle(0)[1] == "found" and st.auto[0].image_shape == (100, 100)
    # unsure: the guess is shown (orange), not the whole frame the predictor fell back to
    guess = _located(30, 30, 25, 0.1).to_dict()
    st.update_from_result(1, {"embryo": EmbryoBox.full_frame((100, 100)).to_dict(),
                              "embryo_unsure": True, "embryo_guess": guess})
    assert st.circle(1)[1] == "unsure" and st.auto[1].cx == 30
    # a run's flag holds even where the widget's own threshold would not flag it
    st.update_from_result(2, {"embryo": used, "embryo_unsure": True, "embryo_guess": used})
    assert st.circle(2)[1] == "unsure"
    # the user's circle is left alone
    st.set_user(0, EmbryoBox.from_circle(10, 10, 9, (100, 100)), whole_stack=False)
    st.update_from_result(0, {"embryo": st.user[0].to_dict(), "embryo_unsure": False})
    assert st.circle(0)[1] == "given"
    assert ec.is_unsure(_located(1, 1, 1, 0.2), min_confidence=0.3)
