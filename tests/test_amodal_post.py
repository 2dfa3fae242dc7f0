"""Post-processing of the amodal detector's candidates (predict/amodal_post.py) and the one
mask NMS every predictor uses (predict/mask_nms.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blastoseg.predict.amodal_post import (
    DEFAULT_LAYER_EDGES,
    LayerRule,
    fit_layer_table,
    layer_count,
    postprocess_detections,
    select_cells,
)
from blastoseg.predict.mask_nms import mask_nms, mask_overlaps

SIZE = 96


def disc(cy: float, cx: float, r: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def random_candidates(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probability maps of n discs scattered so that some overlap strongly, and scores."""
    probs = np.zeros((n, 48, 48), np.float32)
    for k in range(n):
        m = disc(rng.uniform(12, 36), rng.uniform(12, 36), rng.uniform(6, 12), 48)
        probs[k] = np.where(m, rng.uniform(0.55, 1.0), rng.uniform(0.0, 0.45))
    return probs, rng.uniform(0.05, 1.0, n).astype(np.float32)


# one simple rule: o < 0.25 -> one layer, o >= 0.25 -> two layers
RULE_EDGES = [0.0, 0.25]
RULE_TABLE = [1.0, 1.0, 2.0]


def four_cells() -> list[np.ndarray]:
    return [disc(24, 24, 10), disc(24, 72, 10), disc(72, 24, 10), disc(72, 72, 10)]


def test_mask_overlaps_two_squares():
    a = np.zeros((2, 10, 10), bool)
    a[0, :, :5] = True     # 50 px
    a[1, :, 3:8] = True    # 50 px, 20 shared
    iou, area = mask_overlaps(a)
    assert area.tolist() == [50, 50]
    assert iou[0, 1] == pytest.approx(20 / 80)
    assert iou[0, 0] == pytest.approx(1.0)
    # probabilities are binarised at 0.5, uint8 at 128
    iou_p, _ = mask_overlaps(np.where(a, 0.9, 0.1).astype(np.float32))
    iou_u, _ = mask_overlaps(np.where(a, 200, 20).astype(np.uint8))
    assert np.allclose(iou_p, iou) and np.allclose(iou_u, iou)


def reference_nms(probs: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Greedy mask NMS written out pair by pair: best score first, a candidate goes when its
    IoU (masks at 0.5) with a kept one is above ``thr``."""
    masks = probs >= 0.5
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable").tolist():
        ok = True
        for j in keep:
            inter = (masks[i] & masks[j]).sum()
            union = (masks[i] | masks[j]).sum()
            ok &= bool(inter / max(union, 1) <= thr)
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("thr", [0.3, 0.6, 0.9, 1.0])
def test_mask_nms_matches_the_pairwise_rule(thr):
    rng = np.random.default_rng(1)
    probs, scores = random_candidates(rng, 12)
    iou, _ = mask_overlaps(probs)
    assert mask_nms(iou, scores, thr) == reference_nms(probs, scores, thr)
    # the same on torch tensors (compared where they lie, e.g. on the GPU)
    iou_t, area_t = mask_overlaps(torch.from_numpy(probs))
    assert np.allclose(iou_t, iou) and mask_nms(iou_t, scores, thr) == mask_nms(iou, scores, thr)
    if thr >= 1.0:
        assert mask_nms(iou, scores, thr) == np.argsort(-scores, kind="stable").tolist()


def test_mask_nms_candidates_kept_and_empty():
    rng = np.random.default_rng(4)
    probs, scores = random_candidates(rng, 10)
    iou, _ = mask_overlaps(probs)
    above = np.flatnonzero(scores >= 0.4)
    assert mask_nms(iou, scores, 0.5, above) == above[
        reference_nms(probs[above], scores[above], 0.5)].tolist()
    # kept ones come first, are never dropped, and suppress the others
    first = int(np.argmin(scores))
    rest = [i for i in range(10) if i != first]
    out = mask_nms(iou, scores, 0.5, rest, kept=[first])
    assert out[0] == first and all(iou[first, j] <= 0.5 for j in out[1:])
    assert mask_nms(np.zeros((0, 0)), [], 0.5) == []
    assert mask_overlaps(np.zeros((0, 8, 8)))[0].shape == (0, 0)
    assert mask_overlaps(torch.zeros(0, 8, 8))[0].shape == (0, 0)


def test_plain_recipe_is_unchanged_without_a_rule():
    """rule=None: exactly score threshold + mask NMS, in score order (today's predictor)."""
    rng = np.random.default_rng(2)
    for _ in range(5):
        probs, scores = random_candidates(rng, 15)
        for thr in (0.3, 0.5):
            res = postprocess_detections(probs, scores, None, score_threshold=thr,
                                         mask_nms_iou=0.6)
            above = np.flatnonzero(scores >= thr)
            kept = reference_nms(probs[above], scores[above], 0.6)
            assert res.indices.tolist() == above[kept].tolist()
            assert np.allclose(res.scores, scores[res.indices])
            assert res.n_cells == len(kept) and res.layer_estimate is None


def test_ap_mode_returns_the_plain_list_and_counts_at_the_count_threshold():
    """score_threshold < count_threshold (mask AP): the same list as plain NMS at 0.05, with
    the cells (>= count threshold) unchanged."""
    rng = np.random.default_rng(3)
    probs, scores = random_candidates(rng, 15)
    res = postprocess_detections(probs, scores, None, score_threshold=0.05, mask_nms_iou=0.6,
                                 count_threshold=0.5)
    above = np.flatnonzero(scores >= 0.05)
    kept = above[reference_nms(probs[above], scores[above], 0.6)]
    assert sorted(res.indices.tolist()) == sorted(kept.tolist())
    assert np.all(np.diff(res.scores) <= 0)
    assert res.n_cells == int((scores[kept] >= 0.5).sum()) == int((res.scores >= 0.5).sum())


def test_empty_input():
    res = postprocess_detections(np.zeros((0, 8, 8), np.float32), np.zeros(0, np.float32),
                                 np.zeros((8, 8), np.float32), score_threshold=0.5,
                                 mask_nms_iou=0.6, rule=LayerRule(table=RULE_TABLE,
                                                                  edges=RULE_EDGES))
    assert res.n_cells == 0 and len(res.indices) == 0 and len(res.scores) == 0


def test_fit_layer_table_means_per_bin():
    occ = np.array([[0.01, 0.02, 0.3, 0.3], [0.01, 0.9, 0.0, 0.3]], np.float32)
    layers = np.array([[1, 1, 2, 3], [0, 4, 0, 2]])
    table = fit_layer_table([occ], [layers], edges=[0.0, 0.25, 0.5])
    # bin 0: o < 0 (none) -> 1.0; bin 1: [0, .25) over pixels inside a cell: 1, 1 -> 1.0
    # bin 2: [.25, .5): 2, 3, 2 -> 7/3; bin 3: >= .5: 4
    assert table == pytest.approx([1.0, 1.0, 7 / 3, 4.0])
    with pytest.raises(ValueError):
        fit_layer_table([occ], [layers[:1]])


def test_layer_count_of_separate_cells_is_their_number():
    cells = np.stack(four_cells())
    occ = np.zeros((SIZE, SIZE), np.float32)
    assert layer_count(cells, occ, RULE_TABLE, RULE_EDGES) == pytest.approx(4.0)
    assert layer_count(cells[:0], occ, RULE_TABLE, RULE_EDGES) == 0.0


def test_layer_count_sees_a_cell_hidden_under_another():
    """A cell entirely under another one adds no mask area, but the occlusion map marks its
    pixels as two layers deep: the estimate rises by about one cell."""
    cells = four_cells()
    hidden = disc(24, 24, 9)            # under the first cell
    occ = np.where(hidden, 0.5, 0.0).astype(np.float32)
    est = layer_count(np.stack(cells), occ, RULE_TABLE, RULE_EDGES)
    assert est == pytest.approx(4 + hidden.sum() / cells[0].sum(), rel=1e-6)
    assert round(est) == 5


def stacked_scene(occluded: bool):
    """Four cells found with score 1, and a fifth candidate over the first (IoU ~0.7, so plain
    NMS at 0.6 removes it): a second cell stacked under it (occlusion map high on the shared
    pixels) or a duplicate (occlusion map empty)."""
    cells = four_cells()
    extra = disc(26, 27, 10)
    masks = np.stack(cells + [extra]).astype(np.float32)
    scores = np.array([0.99, 0.98, 0.97, 0.96, 0.9], np.float32)
    occ = np.where(cells[0] & extra, 0.5, 0.0).astype(np.float32) if occluded \
        else np.zeros((SIZE, SIZE), np.float32)
    return masks, scores, occ


def test_layer_rule_adds_a_stacked_cell_that_nms_removed():
    masks, scores, occ = stacked_scene(occluded=True)
    iou, _ = mask_overlaps(masks)
    assert 0.6 < iou[0, 4] < 0.9
    rule = LayerRule(table=RULE_TABLE, edges=RULE_EDGES, min_count=3.5, add_min_score=0.5,
                     add_max_iou=0.9)
    plain = postprocess_detections(masks, scores, occ, score_threshold=0.5, mask_nms_iou=0.6)
    assert plain.n_cells == 4
    res = postprocess_detections(masks, scores, occ, score_threshold=0.5, mask_nms_iou=0.6,
                                 rule=rule)
    assert res.n_cells == 5 and sorted(res.indices.tolist()) == [0, 1, 2, 3, 4]
    assert res.layer_estimate == pytest.approx(4.0 + (masks[0].astype(bool)
                                                      & masks[4].astype(bool)).sum()
                                               / masks[0].astype(bool).sum(), rel=1e-6)
    # the same candidate is refused when it is a near-copy (add_max_iou), or too weak
    for strict in (LayerRule(table=RULE_TABLE, edges=RULE_EDGES, add_max_iou=0.6),
                   LayerRule(table=RULE_TABLE, edges=RULE_EDGES, add_min_score=0.95)):
        assert postprocess_detections(masks, scores, occ, score_threshold=0.5,
                                      mask_nms_iou=0.6, rule=strict).n_cells == 4


def test_layer_rule_leaves_a_duplicate_out():
    masks, scores, occ = stacked_scene(occluded=False)
    rule = LayerRule(table=RULE_TABLE, edges=RULE_EDGES)
    res = postprocess_detections(masks, scores, occ, score_threshold=0.5, mask_nms_iou=0.6,
                                 rule=rule)
    assert res.n_cells == 4 and 4 not in res.indices.tolist()


def test_layer_rule_drops_the_weakest_of_too_many():
    """A duplicate that slipped through NMS (IoU < 0.6) is dropped when the occlusion map says
    the embryo holds one cell fewer; with drop=False it stays."""
    cells = four_cells()
    dup = disc(72, 80, 10)               # IoU ~0.45 with the last cell
    masks = np.stack(cells + [dup]).astype(np.float32)
    scores = np.array([0.99, 0.98, 0.97, 0.96, 0.7], np.float32)
    occ = np.zeros((SIZE, SIZE), np.float32)
    iou, area = mask_overlaps(masks)
    assert iou[3, 4] < 0.6
    rule = LayerRule(table=RULE_TABLE, edges=RULE_EDGES, min_count=3.5)
    cells_kept, est = select_cells(iou, area, masks, scores, occ, score_threshold=0.5,
                                   mask_nms_iou=0.6, rule=rule)
    assert round(est) == 4 and cells_kept == [0, 1, 2, 3]
    keep_all = LayerRule(table=RULE_TABLE, edges=RULE_EDGES, min_count=3.5, drop=False)
    assert len(select_cells(iou, area, masks, scores, occ, score_threshold=0.5,
                            mask_nms_iou=0.6, rule=keep_all)[0]) == 5
    # in AP mode the dropped cell is still listed, just below the count threshold
    res = postprocess_detections(masks, scores, occ, score_threshold=0.05, mask_nms_iou=0.6,
                                 count_threshold=0.5, rule=rule)
    assert res.n_cells == 4 and 4 in res.indices.tolist()
    assert res.scores[res.indices.tolist().index(4)] < 0.5
    assert int((res.scores >= 0.5).sum()) == 4


def test_layer_rule_stays_out_below_min_count():
    """Fewer cells than min_count: the plain recipe's answer, whatever the occlusion map."""
    cells = four_cells()[:2]
    extra = disc(26, 27, 10)
    masks = np.stack(cells + [extra]).astype(np.float32)
    scores = np.array([0.99, 0.98, 0.9], np.float32)
    occ = np.where(cells[0] & extra, 0.5, 0.0).astype(np.float32)
    res = postprocess_detections(masks, scores, occ, score_threshold=0.5, mask_nms_iou=0.6,
                                 rule=LayerRule(table=RULE_TABLE, edges=RULE_EDGES,
                                                min_count=3.5))
    assert res.n_cells == 2 and res.layer_estimate < 3.5


def test_layer_rule_dict_round_trip_and_checks():
    rule = LayerRule(table=[1.0] * (len(DEFAULT_LAYER_EDGES) + 1), min_count=4.0, drop=False)
    d = rule.to_dict()
    assert LayerRule.from_dict({**d, "calibration": {"frames": 3}}) == rule
    # a dict is accepted where a rule is
    masks, scores, occ = stacked_scene(occluded=True)
    as_dict = postprocess_detections(masks, scores, occ, score_threshold=0.5, mask_nms_iou=0.6,
                                     rule={"table": RULE_TABLE, "edges": RULE_EDGES})
    assert as_dict.n_cells == 5
    with pytest.raises(ValueError, match="len\\(edges\\) \\+ 1"):
        LayerRule(table=[1.0, 2.0], edges=[0.0, 0.25])
    with pytest.raises(ValueError, match="increase"):
        LayerRule(table=[1.0, 1.0, 1.0], edges=[0.3, 0.1])
