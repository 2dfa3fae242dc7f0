"""Hungarian matching (eq. 4.10-4.13), SparseSEU-Net losses (eq. 4.14-4.17) and inference
scores (section 4.5.3) on hand-made cases whose answers are computed by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from blastoseg.errors import BlastosegError
from blastoseg.train.sparse_losses import (
    dice_loss,
    instance_scores,
    mask_iou,
    sigmoid_focal_loss,
    sparse_losses,
)
from blastoseg.train.sparse_matching import (
    assign_max,
    dice_similarity,
    hungarian_match,
    matching_scores,
)

BIG = 30.0  # a logit whose sigmoid is 1 (or 0) to float precision


def pairs(rows, cols):
    return sorted(zip(rows.tolist(), cols.tolist(), strict=True))


# --- assignment on hand-made score matrices -------------------------------------------------

def test_assignment_beats_greedy():
    # greedy takes (0, 0) = 0.9 then (1, 1) = 0.1 (total 1.0); optimal is 0.8 + 0.8 = 1.6
    rows, cols = assign_max(torch.tensor([[0.9, 0.8], [0.8, 0.1]]))
    assert pairs(rows, cols) == [(0, 1), (1, 0)]
    assert rows.dtype == cols.dtype == torch.int64


def test_assignment_known_3x3_and_rectangular():
    s = np.array([[0.1, 0.5, 0.2],
                  [0.6, 0.7, 0.1],
                  [0.3, 0.2, 0.4]])
    # best total: (0,1) 0.5 + (1,0) 0.6 + (2,2) 0.4 = 1.5 (the diagonal gives 1.2)
    assert pairs(*assign_max(s)) == [(0, 1), (1, 0), (2, 2)]
    # 4 predictions, 2 cells: every cell gets its best free prediction
    s = torch.tensor([[0.0, 0.1], [0.9, 0.2], [0.1, 0.3], [0.8, 0.95]])
    assert pairs(*assign_max(s)) == [(1, 0), (3, 1)]


def test_assignment_empty_and_non_finite():
    rows, cols = assign_max(torch.zeros(5, 0))
    assert rows.numel() == cols.numel() == 0 and rows.dtype == torch.int64
    s = torch.tensor([[float("nan"), 0.2], [0.3, float("inf")]])  # non-finite = worst
    assert pairs(*assign_max(s)) == [(0, 1), (1, 0)]
    with pytest.raises(BlastosegError, match=r"\(N, G\) matrix"):
        assign_max(torch.zeros(3))


# --- matching scores and hungarian_match ------------------------------------------------------

def test_dice_similarity_by_hand():
    pred = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    gt = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    d = dice_similarity(pred, gt)
    assert d[0, 0] == pytest.approx(2 / 3, abs=1e-4)  # 2*1 / (2 + 1)
    assert d[0, 1] == pytest.approx(1.0, abs=1e-4)
    assert d[1, 0] == 0 and d[1, 1] == 0  # an empty prediction scores 0, not NaN


def test_matching_score_formula_by_hand():
    class_prob = torch.tensor([[0.5], [0.9]])
    mask_prob = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    gt_masks = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    c = matching_scores(class_prob, mask_prob, torch.tensor([0]), gt_masks, lam=0.8)
    assert c.shape == (2, 1)
    assert c[0, 0] == pytest.approx(0.5 ** 0.2 * (2 / 3) ** 0.8, rel=1e-3)
    assert c[1, 0] == 0.0  # no overlap -> dice 0 -> score 0 whatever the class probability
    # the class term picks the cell's class column
    two = matching_scores(torch.tensor([[0.2, 0.6]]), mask_prob[:1], torch.tensor([1]),
                          gt_masks, lam=0.5)
    assert two[0, 0] == pytest.approx(math.sqrt(0.6 * 2 / 3), rel=1e-3)


def test_hungarian_match_prefers_the_right_masks():
    # 4 pixels per image; cell 0 = pixels 0-1, cell 1 = pixels 2-3
    gt = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    mask_prob = torch.tensor([[0.1, 0.1, 0.9, 0.9],   # looks like cell 1
                              [0.5, 0.5, 0.5, 0.5],   # vague
                              [0.9, 0.9, 0.1, 0.1]])  # looks like cell 0
    class_prob = torch.tensor([[0.3], [0.9], [0.3]])
    rows, cols = hungarian_match(class_prob, mask_prob, torch.tensor([0, 0]), gt)
    assert pairs(rows, cols) == [(0, 1), (2, 0)]
    # lambda = 0: only the class matters -> the confident vague prediction is matched
    rows, cols = hungarian_match(class_prob, mask_prob, torch.tensor([0, 0]), gt, lam=0.0)
    assert 1 in rows.tolist()
    # (N, H, W) inputs are flattened
    rows2, cols2 = hungarian_match(class_prob, mask_prob.view(3, 2, 2), torch.tensor([0, 0]),
                                   gt.view(2, 2, 2))
    assert pairs(rows2, cols2) == [(0, 1), (2, 0)]


def test_hungarian_match_no_cells_gives_empty():
    rows, cols = hungarian_match(torch.rand(5, 1), torch.rand(5, 16),
                                 torch.zeros(0, dtype=torch.long), torch.zeros(0, 16))
    assert rows.numel() == 0 and cols.numel() == 0
    assert rows.dtype == cols.dtype == torch.int64


def test_more_cells_than_predictions_truncates_with_a_warning():
    gt = torch.eye(3)  # 3 one-pixel cells
    mask_prob = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with pytest.warns(RuntimeWarning, match="3 ground-truth cells but only 2 predictions"):
        rows, cols = hungarian_match(torch.ones(2, 1), mask_prob, torch.zeros(3).long(), gt)
    assert pairs(rows, cols) == [(0, 2), (1, 0)]  # cell 1 stays unmatched


def test_hungarian_match_runs_without_gradient():
    class_prob = torch.rand(3, 1, requires_grad=True)
    mask_prob = torch.rand(3, 4, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, cols = hungarian_match(class_prob, mask_prob, torch.zeros(2).long(),
                                     torch.rand(2, 4))
    assert len(rows) == 2 and not rows.requires_grad


def test_matching_input_errors_are_clear():
    with pytest.raises(BlastosegError, match="0-based indices in 0..0"):
        hungarian_match(torch.rand(2, 1), torch.rand(2, 4), torch.tensor([1]), torch.rand(1, 4))
    with pytest.raises(BlastosegError, match="4 pixels but the ground-truth masks 9"):
        hungarian_match(torch.rand(2, 1), torch.rand(2, 4), torch.tensor([0]), torch.rand(1, 9))
    with pytest.raises(BlastosegError, match="2 ground-truth classes but 1"):
        hungarian_match(torch.rand(2, 1), torch.rand(2, 4), torch.tensor([0, 0]),
                        torch.rand(1, 4))
    with pytest.raises(BlastosegError, match="lam must be in"):
        hungarian_match(torch.rand(2, 1), torch.rand(2, 4), torch.tensor([0]), torch.rand(1, 4),
                        lam=1.5)


# --- loss terms -------------------------------------------------------------------------------

def test_dice_loss_by_hand():
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    same = torch.where(t > 0, BIG, -BIG)
    assert dice_loss(same, t)[0] == pytest.approx(0.0, abs=1e-4)  # identical masks
    assert dice_loss(-same, t)[0] == pytest.approx(1.0, abs=1e-4)  # disjoint masks
    # p = 0.5 everywhere: 1 - 2 * 1 / (4 * 0.25 + 2) = 1/3
    assert dice_loss(torch.zeros(1, 4), t)[0] == pytest.approx(1 / 3, abs=1e-4)


def test_focal_loss_by_hand():
    # a confident right prediction costs ~nothing, either way round
    assert float(sigmoid_focal_loss(torch.tensor(10.0), torch.tensor(1.0))) < 1e-6
    assert float(sigmoid_focal_loss(torch.tensor(-10.0), torch.tensor(0.0))) < 1e-6
    # p = 0.5: alpha_t * 0.5^2 * ln 2
    ln2 = math.log(2.0)
    assert float(sigmoid_focal_loss(torch.tensor(0.0), torch.tensor(1.0))) == \
        pytest.approx(0.25 * 0.25 * ln2, rel=1e-5)
    assert float(sigmoid_focal_loss(torch.tensor(0.0), torch.tensor(0.0))) == \
        pytest.approx(0.75 * 0.25 * ln2, rel=1e-5)
    # a confident wrong prediction costs a lot
    assert float(sigmoid_focal_loss(torch.tensor(-10.0), torch.tensor(1.0))) > 2.0


def test_mask_iou_by_hand():
    logits = torch.tensor([[BIG, BIG, -BIG, -BIG], [-BIG] * 4])
    t = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0] * 4])
    assert mask_iou(logits, t).tolist() == pytest.approx([0.5, 0.0])


def _out(cls, masks, iou=None):
    return {"class_logits": cls, "mask_logits": masks, "iou_logits": iou}


def test_sparse_losses_perfect_prediction_is_near_zero():
    cell = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    masks = torch.stack([torch.where(cell > 0, BIG, -BIG), torch.zeros(2, 2)])[None]
    cls = torch.tensor([[[BIG / 3], [-BIG / 3]]])  # right and sure: object, no object
    losses = sparse_losses(_out(cls, masks),
                           [{"labels": torch.tensor([0]), "masks": cell[None]}])
    assert losses["matched"].item() == 1
    for key in ("loss", "cls", "dice", "bce"):
        assert losses[key].item() == pytest.approx(0.0, abs=1e-4), key
    assert losses["iou"].item() == 0.0  # no IoU head


def test_sparse_losses_values_by_hand():
    # 3 predictions on 2 x 2 images, one cell (top row)
    cell = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    masks = torch.stack([torch.full((2, 2), -BIG),            # empty
                         torch.zeros(2, 2),                    # p = 0.5 everywhere
                         torch.full((2, 2), -BIG)])[None]      # empty
    cls = torch.zeros(1, 3, 1)  # p = 0.5 for all
    iou = torch.zeros(1, 3)
    losses = sparse_losses(_out(cls, masks, iou),
                           [{"labels": torch.tensor([0]), "masks": cell[None]}])
    ln2 = math.log(2.0)
    # only prediction 1 has a non-zero dice with the cell, so it is matched
    assert losses["matched"].item() == 1
    # focal: one positive (0.25 * 0.25 * ln2) + two negatives (0.75 * 0.25 * ln2), / 1 match
    assert losses["cls"].item() == pytest.approx((0.25 + 2 * 0.75) * 0.25 * ln2, rel=1e-5)
    assert losses["dice"].item() == pytest.approx(1 / 3, abs=1e-4)
    assert losses["bce"].item() == pytest.approx(ln2, rel=1e-5)  # logit 0 -> ln 2 per pixel
    assert losses["iou"].item() == pytest.approx(ln2, rel=1e-5)  # logit 0 -> ln 2 per target
    expected = 2 * losses["cls"].item() + 2 * (1 / 3) + 2 * ln2 + ln2
    assert losses["loss"].item() == pytest.approx(expected, rel=1e-4)
    # weights scale the terms
    w = sparse_losses(_out(cls, masks, iou), [{"labels": torch.tensor([0]), "masks": cell[None]}],
                      w_cls=0.0, w_dice=1.0, w_bce=0.0, w_iou=0.0)
    assert w["loss"].item() == pytest.approx(1 / 3, abs=1e-4)


def test_sparse_losses_without_cells_only_pushes_to_no_object():
    cls = torch.zeros(2, 4, 1, requires_grad=True)
    masks = torch.randn(2, 4, 8, 8, requires_grad=True)
    iou = torch.zeros(2, 4, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8)}
    losses = sparse_losses(_out(cls, masks, iou), [empty, dict(empty)])
    assert losses["matched"].item() == 0
    assert losses["dice"].item() == losses["bce"].item() == losses["iou"].item() == 0.0
    # 8 negatives at p = 0.5, normalised by max(matches, 1) = 1
    assert losses["cls"].item() == pytest.approx(8 * 0.75 * 0.25 * math.log(2), rel=1e-5)
    losses["loss"].backward()  # still one graph
    assert masks.grad is not None and float(masks.grad.abs().sum()) == 0.0
    assert float(cls.grad.abs().sum()) > 0


def test_sparse_losses_resizes_targets_to_low_resolution_masks():
    cell = torch.zeros(8, 8)
    cell[:4] = 1.0  # top half
    low = torch.full((1, 2, 4, 4), -BIG)
    low[0, 0, :2] = BIG  # prediction 0: top half at 1/2 resolution
    losses = sparse_losses(_out(torch.zeros(1, 2, 1), low),
                           [{"labels": torch.tensor([0]), "masks": cell[None]}])
    assert losses["dice"].item() == pytest.approx(0.0, abs=1e-4)


def test_sparse_losses_input_errors_are_clear():
    out = _out(torch.zeros(2, 3, 1), torch.zeros(2, 3, 4, 4))
    ok = {"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4)}
    with pytest.raises(BlastosegError, match="2 images but 1 targets"):
        sparse_losses(out, [ok])
    with pytest.raises(BlastosegError, match="0-based class indices in 0..0"):
        sparse_losses(out, [ok, {"labels": torch.tensor([1]), "masks": torch.ones(1, 4, 4)}])
    with pytest.raises(BlastosegError, match="'masks' must be \\(G, H, W\\) with G = 2"):
        sparse_losses(out, [ok, {"labels": torch.tensor([0, 0]), "masks": torch.ones(1, 4, 4)}])
    with pytest.raises(BlastosegError, match="'labels'"):
        sparse_losses(out, [ok, {"masks": torch.ones(1, 4, 4)}])
    with pytest.raises(BlastosegError, match="class_logits"):
        sparse_losses({"mask_logits": torch.zeros(2, 3, 4, 4)}, [ok, ok])


# --- inference scores ---------------------------------------------------------------------------

def test_instance_scores_by_hand():
    p = torch.tensor([0.9, 0.7, 0.2, 0.1])
    logits = torch.log(p / (1 - p)).view(1, 2, 2)
    masks = torch.stack([logits[0], torch.full((2, 2), -BIG)])[None]  # (1, 2, 2, 2)
    cls = torch.zeros(1, 2, 1)  # p = 0.5
    s = instance_scores(cls, masks)
    # maskness = mean of the probabilities >= 0.5 = (0.9 + 0.7) / 2 = 0.8
    assert s.shape == (1, 2)
    assert s[0].tolist() == pytest.approx([0.4, 0.0], abs=1e-5)  # an empty mask scores 0
    # a stricter binarisation threshold keeps only 0.9
    assert float(instance_scores(cls, masks, mask_threshold=0.8)[0, 0]) == \
        pytest.approx(0.45, abs=1e-5)
    # with the IoU head: times sigmoid(iou logit)
    s_iou = instance_scores(cls, masks, torch.zeros(1, 2))
    assert float(s_iou[0, 0]) == pytest.approx(0.2, abs=1e-5)
    # several classes: the best class's probability, and its index
    two = torch.tensor([[[-BIG, 0.0], [0.0, -BIG]]])
    s2, labels = instance_scores(two, masks, return_labels=True)
    assert labels[0].tolist() == [1, 0]
    assert float(s2[0, 0]) == pytest.approx(0.4, abs=1e-5)
    with pytest.raises(BlastosegError, match="instance_scores needs"):
        instance_scores(cls, masks[0])
