"""Shape completion through the VQ-VAE prior and propose-from-a-click
(blastoseg.annotate.complete / .propose)."""

import numpy as np
import pytest

from blastoseg.annotate import propose
from blastoseg.annotate.complete import complete_shape, edge_points, ellipse_guess, load_prior
from blastoseg.annotate.propose import Proposer, image_key, propose_at
from blastoseg.annotate.shapes import ellipse_mask
from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.synth import render_embryo


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def occluded_cells():
    """(visible, amodal, hidden region) of the occluded cells (10-95 % visible) of three
    synthetic 6-cell embryos."""
    out = []
    for seed in (200, 201, 202):
        inst = render_embryo(6, seed=seed).instances
        for i, (m, v) in enumerate(zip(inst.masks, inst.visible_masks, strict=True)):
            if 0.1 * m.sum() <= v.sum() < 0.95 * m.sum():
                out.append((v, m, np.delete(inst.masks, i, axis=0).any(axis=0)))
    assert len(out) >= 10
    return out


# --- complete_shape ----------------------------------------------------------------------
def test_completion_improves_iou_and_keeps_user_pixels(occluded_cells):
    vq = load_prior()
    base, plain, with_hidden = [], [], []
    for v, m, hid in occluded_cells:
        a = complete_shape(v, vq)
        b = complete_shape(v, vq, hidden=hid)
        for out in (a, b):
            assert out.shape == v.shape and out.dtype == bool
            assert not (v & ~out).any()  # the user's pixels are never removed
        assert not (b & ~(v | hid)).any()  # never into known background
        base.append(iou(v, m))
        plain.append(iou(a, m))
        with_hidden.append(iou(b, m))
    # measured on these cells: 0.55 -> 0.82 (no hidden region) -> 0.87 (hidden region)
    assert np.mean(plain) >= np.mean(base) + 0.15
    assert np.mean(with_hidden) >= np.mean(base) + 0.22


def test_a_complete_cell_stays_as_it_is():
    cell = ellipse_mask((120, 140), (60, 70), (40, 28), 0.6)
    for prior in ("shape-prior-default", None):
        out = complete_shape(cell, prior)
        assert iou(out, cell) > 0.95 and not (cell & ~out).any()


def test_half_a_disc_is_completed():
    disc = ellipse_mask((120, 120), (60, 60), (35, 35))
    half = disc.copy()
    half[:, 60:] = False  # hidden under a neighbour on the right
    hidden = np.zeros_like(disc)
    hidden[:, 60:] = True
    assert iou(half, disc) < 0.55
    assert iou(complete_shape(half, hidden=hidden), disc) > 0.9
    # the real edge is the round half only
    pts = edge_points(half, hidden)
    assert (pts[:, 1] < 60).all() and len(pts) > 50
    e = ellipse_guess(half, hidden)
    assert e.center == pytest.approx((60, 60), abs=1.5) and e.axes[0] == pytest.approx(35, abs=1.5)


def test_box_hint():
    disc = ellipse_mask((100, 100), (50, 50), (30, 30))
    part = disc & ellipse_mask((100, 100), (50, 25), (20, 20))
    out = complete_shape(part, None, box=(20, 20, 81, 81))
    assert iou(out, disc) > 0.95
    assert iou(complete_shape(part, box=(20, 20, 81, 81)), disc) > 0.9


def test_completion_bad_inputs():
    with pytest.raises(InvalidImageError, match="empty"):
        complete_shape(np.zeros((30, 30), bool))
    with pytest.raises(InvalidImageError, match=r"\(H, W\)"):
        complete_shape(np.ones((2, 30, 30), bool))
    m = ellipse_mask((30, 30), (15, 15), (5, 5))
    with pytest.raises(InvalidImageError, match="hidden"):
        complete_shape(m, hidden=np.ones((10, 10), bool))
    with pytest.raises(InvalidImageError, match="box"):
        complete_shape(m, box=(10, 10, 5, 20))
    with pytest.raises(BlastosegError):
        complete_shape(m, shape_prior="no-such-prior")


# --- propose_at --------------------------------------------------------------------------
class FakePredictor:
    """predict() returns fixed detections and counts its calls (shared by shallow copies)."""

    def __init__(self, inst, with_attrs=False):
        self.inst, self.calls = inst, []
        if with_attrs:
            self.score_threshold, self.mask_nms_iou = 0.5, 0.6

    def predict(self, image):
        self.calls.append(image.shape)
        return self.inst


@pytest.fixture
def fake():
    """A: big disc (score 0.9); B: small disc inside A (score 0.9); C: disc apart (0.5)."""
    shape = (100, 100)
    masks = np.stack([ellipse_mask(shape, (40, 40), (25, 25)),
                      ellipse_mask(shape, (45, 45), (10, 10)),
                      ellipse_mask(shape, (80, 80), (8, 8))])
    propose._LAST = None
    yield FakePredictor(FrameInstances(masks=masks, scores=[0.9, 0.9, 0.5])), masks, shape
    propose._LAST = None


def test_propose_picks_and_excludes(fake):
    pred, masks, shape = fake
    img = np.zeros(shape, np.uint8)
    p = Proposer(pred)
    prop = p.propose(img, (45, 45))
    assert prop.contains_click and prop.score == pytest.approx(0.9)
    np.testing.assert_array_equal(prop.mask, masks[1])  # equal scores: the smaller
    # B already annotated: the same click proposes the cell around it
    np.testing.assert_array_equal(p.propose(img, (45, 45), existing=masks[1:2]).mask, masks[0])
    # A and B annotated: nothing left under or near that click; C is far
    assert p.propose(img, (45, 45), existing=FrameInstances(masks=masks[:2])) is None
    np.testing.assert_array_equal(
        p.propose(img, (78, 78), existing=FrameInstances(masks=masks[:2])).mask, masks[2])
    np.testing.assert_array_equal(p.propose(img, (20, 40)).mask, masks[0])
    # just outside C (radius 8), within 1.5 radii of its centre: the nearest centroid
    near = p.propose(img, (80, 90))
    assert not near.contains_click
    np.testing.assert_array_equal(near.mask, masks[2])
    assert p.propose(img, (80, 90), radius=5) is None
    assert p.propose(img, (5, 95)) is None  # nothing near
    assert p.propose(img, (-50, 300)) is None  # outside the frame
    assert p.propose(img, (45, 45), existing=masks) is None
    assert p.runs == 1 and len(pred.calls) == 1  # one model run for all those clicks


def test_propose_at_caches_per_frame(fake):
    pred, masks, shape = fake
    img = np.zeros(shape, np.uint8)
    np.testing.assert_array_equal(propose_at(pred, img, (20, 40)), masks[0])
    assert propose_at(pred, img, (5, 95)) is None
    assert len(pred.calls) == 1
    img2 = img.copy()
    img2[0, 0] = 1  # another frame: the model runs again
    assert image_key(img2) != image_key(img)
    propose_at(pred, img2, (20, 40))
    assert len(pred.calls) == 2
    propose_at(pred, img2, (45, 45))
    assert len(pred.calls) == 2


def test_propose_uses_a_low_threshold_copy(fake):
    pred, masks, shape = fake
    pred = FakePredictor(pred.inst, with_attrs=True)
    p = Proposer(pred)
    assert p.predictor is not pred
    assert p.predictor.score_threshold == pytest.approx(propose.PROPOSAL_THRESHOLD)
    assert p.predictor.mask_nms_iou == pytest.approx(propose.PROPOSAL_NMS_IOU)
    assert pred.score_threshold == 0.5 and pred.mask_nms_iou == 0.6  # untouched


def test_propose_bad_inputs(fake):
    pred, masks, shape = fake
    with pytest.raises(InvalidImageError, match="one 2D frame"):
        propose_at(pred, np.zeros((3, 100, 100)), (1, 1))
    with pytest.raises(InvalidImageError, match="existing"):
        propose_at(pred, np.zeros(shape), (1, 1), existing=np.zeros((1, 5, 5), bool))
    with pytest.raises(BlastosegError, match="predictor"):
        Proposer(42)
    with pytest.raises(BlastosegError, match="finite"):
        propose_at(pred, np.zeros(shape), (np.nan, 1))


def test_propose_with_the_tiny_model(tiny_models):
    propose._LAST = None
    frame = render_embryo(4, seed=3)
    img = frame.image
    p = Proposer("tiny-amodal", device="cpu")
    det = p.detections(img)
    assert p.runs == 1 and det.shape == img.shape and len(det) >= 1
    assert p.predictor.score_threshold == pytest.approx(propose.PROPOSAL_THRESHOLD)
    # a click on each detection's centroid or inside it proposes a mask containing it
    for i in range(len(det)):
        cy, cx = det.centroid(i)
        prop = p.propose(img, (cy, cx))
        assert prop is not None and prop.mask.shape == img.shape
        if prop.contains_click:
            assert prop.mask[int(round(cy)), int(round(cx))]
        # once annotated, that detection is not proposed again
        again = p.propose(img, (cy, cx), existing=prop.mask[None])
        assert again is None or iou(again.mask, prop.mask) <= 0.8
    assert p.runs == 1  # every click above searched the cached detections
    # the frame corner is far from every cell
    assert p.propose(img, (0, 0), radius=1.0) is None
    propose._LAST = None
    mask = propose_at("tiny-amodal", img, (250, 250), device="cpu")
    assert mask is None or (mask.shape == img.shape and mask.dtype == bool)
    propose._LAST = None
