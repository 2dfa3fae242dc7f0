"""Annotation edit operations and geometric shapes (blastoseg.annotate.edits / .shapes)."""

import copy

import numpy as np
import pytest

from blastoseg.annotate.edits import (
    add_instance,
    delete_instances,
    instance_at,
    instance_ids,
    merge_instances,
    relabel_consecutive,
    replace_mask,
    split_instance,
)
from blastoseg.annotate.shapes import (
    Ellipse,
    circle_from_points,
    ellipse_from_points,
    ellipse_mask,
    polygon_mask,
)
from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances

H = W = 20


def rect(r0, r1, c0, c1, shape=(H, W)):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


@pytest.fixture
def frame():
    """A (64 px, ids 5) over B (64 px, id 7), overlapping 16 px; C (25 px, id 9) apart."""
    a, b, c = rect(2, 10, 2, 10), rect(6, 14, 6, 14), rect(15, 20, 0, 5)
    masks = np.stack([a, b, c])
    vis = np.stack([a, b & ~a, c])
    return FrameInstances(masks=masks, visible_masks=vis, track_ids=[5, 7, 9],
                          scores=[0.9, 0.8, 0.7], class_ids=[1, 1, 2],
                          occlusion=(masks.sum(0) >= 2).astype(np.float32), meta={"k": 1})


def snapshot(inst):
    return copy.deepcopy(inst)


def same(a, b):
    for f in ("masks", "class_ids", "scores", "visible_masks", "occlusion", "track_ids"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert a.meta == b.meta


def check_consistent(inst):
    """Visible masks disjoint, inside their amodal masks; occlusion = overlap map."""
    if inst.visible_masks is not None:
        assert (inst.visible_masks.sum(0) <= 1).all()
        assert not (inst.visible_masks & ~inst.masks).any()
    if inst.occlusion is not None:
        np.testing.assert_array_equal(inst.occlusion, inst.overlap_map().astype(np.float32))
    assert len(np.unique(inst.track_ids)) == len(inst)


# --- edits -------------------------------------------------------------------------------
def test_add_instance(frame):
    before = snapshot(frame)
    new = rect(8, 12, 0, 8)  # overlaps A and B where they are visible
    out = add_instance(frame, new)
    same(frame, before)
    assert out.track_ids.tolist() == [5, 7, 9, 10]
    assert out.scores[-1] == 1.0 and out.class_ids[-1] == 1
    np.testing.assert_array_equal(out.masks[-1], new)
    # the new cell lies under the visible cells where they overlap; visible elsewhere
    np.testing.assert_array_equal(out.visible_masks[-1], new & ~frame.visible_masks.any(0))
    np.testing.assert_array_equal(out.visible_masks[:3], frame.visible_masks)
    check_consistent(out)
    assert out.meta == {"k": 1}
    out2 = add_instance(frame, new, track_id=42, class_id=3, score=0.5)
    assert out2.track_ids[-1] == 42 and out2.class_ids[-1] == 3 and out2.scores[-1] == 0.5


def test_add_instance_without_track_ids_and_to_empty_frame():
    inst = FrameInstances(masks=np.stack([rect(0, 5, 0, 5), rect(10, 15, 10, 15)]))
    out = add_instance(inst, rect(5, 8, 5, 8))
    assert out.track_ids.tolist() == [0, 1, 2]
    assert out.visible_masks is None and out.occlusion is None
    empty = add_instance(FrameInstances.empty((H, W)), rect(0, 3, 0, 3))
    assert empty.track_ids.tolist() == [0] and len(empty) == 1


def test_add_instance_bad_input(frame):
    with pytest.raises(BlastosegError, match="already used"):
        add_instance(frame, rect(0, 2, 0, 2), track_id=7)
    with pytest.raises(InvalidImageError, match="shape"):
        add_instance(frame, np.ones((5, 5), bool))
    with pytest.raises(InvalidImageError, match="empty"):
        add_instance(frame, np.zeros((H, W), bool))


def test_delete_instances(frame):
    before = snapshot(frame)
    out = delete_instances(frame, 5)
    same(frame, before)
    assert out.track_ids.tolist() == [7, 9]
    assert out.scores.tolist() == pytest.approx([0.8, 0.7])
    assert out.class_ids.tolist() == [1, 2]
    # B is now visible where A used to hide it
    np.testing.assert_array_equal(out.visible_masks[0], frame.masks[1])
    check_consistent(out)
    assert len(delete_instances(frame, [5, 7, 9])) == 0
    with pytest.raises(BlastosegError, match="no instance with id 3"):
        delete_instances(frame, [3])


def test_merge_instances(frame):
    before = snapshot(frame)
    out = merge_instances(frame, [7, 5])
    same(frame, before)
    assert out.track_ids.tolist() == [5, 9]
    np.testing.assert_array_equal(out.masks[0], frame.masks[0] | frame.masks[1])
    assert out.scores[0] == pytest.approx(0.9) and out.class_ids.tolist() == [1, 2]
    np.testing.assert_array_equal(out.visible_masks[0], frame.masks[0] | frame.masks[1])
    check_consistent(out)
    assert not out.occlusion.any()
    with pytest.raises(BlastosegError, match="at least two"):
        merge_instances(frame, [5, 5])
    with pytest.raises(BlastosegError, match="no instance"):
        merge_instances(frame, [5, 99])


def test_split_instance(frame):
    before = snapshot(frame)
    # vertical line at x = 4.5 across A (columns 2..9): 3 columns left, 5 right
    out = split_instance(frame, 5, ((0, 4.5), (19, 4.5)))
    same(frame, before)
    assert out.track_ids.tolist() == [5, 7, 9, 10]
    np.testing.assert_array_equal(out.masks[0], rect(2, 10, 5, 10))  # larger part keeps id
    np.testing.assert_array_equal(out.masks[3], rect(2, 10, 2, 5))
    assert out.scores[3] == pytest.approx(0.9) and out.class_ids[3] == 1
    np.testing.assert_array_equal(out.visible_masks[3], rect(2, 10, 2, 5))
    np.testing.assert_array_equal(out.visible_masks[1], frame.visible_masks[1])
    check_consistent(out)
    # the points may lie inside the mask: the line is extended; a diagonal cut works too
    diag = split_instance(frame, 5, ((3, 3), (4, 4)), new_id=50)
    assert diag.track_ids[-1] == 50
    assert diag.masks[0].sum() + diag.masks[3].sum() == 64
    assert diag.masks[0].sum() >= diag.masks[3].sum()


def test_split_refuses(frame):
    with pytest.raises(BlastosegError, match="does not cut instance 5"):
        split_instance(frame, 5, ((0, 15), (19, 15)))
    with pytest.raises(BlastosegError, match="coincide"):
        split_instance(frame, 5, ((4, 4), (4, 4)))
    with pytest.raises(BlastosegError, match="no instance"):
        split_instance(frame, 6, ((0, 4.5), (19, 4.5)))
    with pytest.raises(BlastosegError, match="line must be"):
        split_instance(frame, 5, ((0, 4.5),))


def test_replace_mask(frame):
    before = snapshot(frame)
    new_b = rect(4, 8, 4, 16)  # partly under A (A keeps those pixels), partly free
    out = replace_mask(frame, 7, new_b)
    same(frame, before)
    assert out.track_ids.tolist() == [5, 7, 9] and out.scores[1] == pytest.approx(0.8)
    np.testing.assert_array_equal(out.masks[1], new_b)
    np.testing.assert_array_equal(out.visible_masks[1], new_b & ~frame.masks[0])
    np.testing.assert_array_equal(out.visible_masks[0], frame.masks[0])
    check_consistent(out)
    with pytest.raises(InvalidImageError, match="empty"):
        replace_mask(frame, 7, np.zeros((H, W), bool))
    with pytest.raises(BlastosegError, match="no instance"):
        replace_mask(frame, 8, new_b)


def test_replace_mask_releases_pixels(frame):
    # A shrinks out of the overlap: B, the only cell left there, becomes visible
    out = replace_mask(frame, 5, rect(2, 5, 2, 5))
    np.testing.assert_array_equal(out.visible_masks[1], frame.masks[1])
    check_consistent(out)


def test_instance_at(frame):
    assert instance_at(frame, (8, 8)) == [5, 7]  # A is visible there: on top
    assert instance_at(frame, (12, 12)) == [7]
    assert instance_at(frame, (0, 19)) == []
    assert instance_at(frame, (-1, 3)) == [] and instance_at(frame, (3, 25)) == []
    # without visible masks: the smaller cell first
    big, small = rect(0, 12, 0, 12), rect(5, 9, 5, 9)
    inst = FrameInstances(masks=np.stack([big, small]), track_ids=[1, 2])
    assert instance_at(inst, (6.4, 6.6)) == [2, 1]
    assert instance_at(FrameInstances(masks=np.stack([big, small])), (6, 6)) == [1, 0]
    with pytest.raises(BlastosegError, match="finite"):
        instance_at(inst, (np.nan, 1))


def test_relabel_consecutive(frame):
    out = relabel_consecutive(frame)
    assert out.track_ids.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(out.masks, frame.masks)
    assert frame.track_ids.tolist() == [5, 7, 9]
    shuffled = FrameInstances(masks=frame.masks, track_ids=[9, 5, 7])
    assert relabel_consecutive(shuffled, start=1).track_ids.tolist() == [3, 1, 2]


def test_duplicate_ids_are_refused(frame):
    bad = FrameInstances(masks=frame.masks, track_ids=[1, 1, 2])
    with pytest.raises(BlastosegError, match="unique"):
        instance_ids(bad)
    with pytest.raises(BlastosegError, match="unique"):
        delete_instances(bad, 2)


# --- shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("axes,angle", [((60, 30), 0.0), ((45, 44), 1.0), ((70, 20), 2.4)])
def test_ellipse_mask_area(axes, angle):
    m = ellipse_mask((200, 220), (100.3, 110.6), axes, angle)
    area = np.pi * axes[0] * axes[1]
    assert abs(m.sum() - area) < 0.01 * area
    # the pixel centres inside satisfy the ellipse equation; the box holds them all
    e = Ellipse((100.3, 110.6), axes, angle)
    x1, y1, x2, y2 = e.box
    ys, xs = np.nonzero(m)
    assert ys.min() >= y1 - 0.5 and ys.max() + 1 <= y2 + 0.5
    assert xs.min() >= x1 - 0.5 and xs.max() + 1 <= x2 + 0.5
    np.testing.assert_array_equal(e.mask((200, 220)), m)


def test_ellipse_mask_clipped_and_bad():
    m = ellipse_mask((50, 50), (0, 0), (20, 20))  # a quarter disc inside the frame
    assert abs(m.sum() - np.pi * 400 / 4) < 25
    assert not ellipse_mask((50, 50), (200, 200), (10, 10)).any()
    with pytest.raises(InvalidImageError):
        ellipse_mask((50, 50), (10, 10), (0, 5))
    with pytest.raises(InvalidImageError):
        ellipse_mask((0, 50), (10, 10), (5, 5))


def ellipse_points(cy, cx, a, b, th, t):
    return np.c_[cy + a * np.cos(t) * np.sin(th) + b * np.sin(t) * np.cos(th),
                 cx + a * np.cos(t) * np.cos(th) - b * np.sin(t) * np.sin(th)]


def assert_ellipse(e, cy, cx, a, b, th, tol):
    assert e.center == pytest.approx((cy, cx), abs=tol * a)
    assert e.axes == pytest.approx((a, b), rel=tol)
    d = (e.angle - th) % np.pi
    assert min(d, np.pi - d) < tol * 10


def test_ellipse_from_points_exact_and_partial_arc():
    t = np.linspace(0, 2 * np.pi, 9)[:-1]
    assert_ellipse(ellipse_from_points(ellipse_points(80, 120, 50, 20, 0.7, t)),
                   80, 120, 50, 20, 0.7, 1e-6)
    # only a third of the outline (a cell mostly hidden): still exact without noise
    arc = np.linspace(0.2, 0.2 + 2 * np.pi / 3, 12)
    assert_ellipse(ellipse_from_points(ellipse_points(40, 60, 30, 22, 2.0, arc)),
                   40, 60, 30, 22, 2.0, 1e-6)
    # exactly five points define the conic
    assert_ellipse(ellipse_from_points(ellipse_points(10, 10, 8, 5, 0.3, t[:5])),
                   10, 10, 8, 5, 0.3, 1e-6)


def test_ellipse_from_noisy_points():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 2 * np.pi, 80)
    pts = ellipse_points(100, 90, 60, 40, 0.4, t) + rng.normal(0, 0.5, (80, 2))
    assert_ellipse(ellipse_from_points(pts), 100, 90, 60, 40, 0.4, 0.02)


def test_circle_fits():
    t = np.array([0.3, 1.9, 4.0])
    pts = np.c_[30 + 12 * np.sin(t), 40 + 12 * np.cos(t)]
    for e in (ellipse_from_points(pts), circle_from_points(pts),
              ellipse_from_points(np.r_[pts, [[30 + 12, 40]]])):  # 3 and 4 points: a circle
        assert e.center == pytest.approx((30, 40)) and e.axes == pytest.approx((12, 12))


@pytest.mark.parametrize("pts", [[[0, 0], [1, 1]], [[0, 0], [1, 1], [2, 2], [3, 3]],
                                 [[0, 0], [0, 0], [1, 1]], [[0, 0], [np.nan, 1], [2, 0]]])
def test_ellipse_from_bad_points(pts):
    with pytest.raises(BlastosegError):
        ellipse_from_points(pts)


def test_polygon_mask_exact():
    sq = polygon_mask((50, 50), [(10, 10), (10, 30), (40, 30), (40, 10)])
    np.testing.assert_array_equal(sq, rect(10, 40, 10, 30, (50, 50)))
    # either direction, any starting vertex
    np.testing.assert_array_equal(
        polygon_mask((50, 50), [(40, 30), (10, 30), (10, 10), (40, 10)]), sq)
    # two triangles tile the square: no shared pixel, nothing missing
    t1 = polygon_mask((50, 50), [(10, 10), (10, 30), (40, 30)])
    t2 = polygon_mask((50, 50), [(10, 10), (40, 30), (40, 10)])
    assert not (t1 & t2).any()
    np.testing.assert_array_equal(t1 | t2, sq)


def test_polygon_mask_areas():
    n, r = 64, 40.0
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    poly = np.c_[50.2 + r * np.sin(ang), 50.7 + r * np.cos(ang)]
    area = n / 2 * r * r * np.sin(2 * np.pi / n)
    assert abs(polygon_mask((101, 101), poly).sum() - area) < 0.005 * area
    # a non-convex L shape (even-odd): 30 x 10 + 10 x 20 = 500
    ell = [(0, 0), (0, 10), (20, 10), (20, 30), (30, 30), (30, 0)]
    assert polygon_mask((40, 40), ell).sum() == 500
    # clipped to the frame
    assert polygon_mask((10, 10), [(-5, -5), (-5, 5), (5, 5), (5, -5)]).sum() == 25
    with pytest.raises(InvalidImageError):
        polygon_mask((10, 10), [(0, 0), (1, 1)])
