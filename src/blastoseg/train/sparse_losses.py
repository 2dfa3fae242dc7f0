r"""Losses and inference scores of the SparseSEU-Net (thesis eq. 4.14-4.17, sections 4.5.3,
5.7.3).

After the one-to-one matching (:mod:`blastoseg.train.sparse_matching`, eq. 4.10-4.13) the
loss of a batch is

.. math::

    L = w_{cls} L_{cls} + w_{dice} L_{dice} + w_{bce} L_{bce} + w_{iou} L_{iou}

- :math:`L_{dice}` (eq. 4.14): over the matched pairs (m, t),
  :math:`1 - 2 \sum m t / (\sum m^2 + \sum t^2)`, m = sigmoid(mask logit), summed and
  divided by the number of matched pairs.
- :math:`L_{bce}` (eq. 4.15): the per-pixel binary cross-entropy of the matched masks,
  averaged over their pixels. Eq. 4.16 is their weighted sum, the mask loss
  :math:`L_{mask} = w_{dice} L_{dice} + w_{bce} L_{bce}`.
- :math:`L_{cls}` (eq. 4.17): the sigmoid focal loss (Lin et al. 2017; alpha 0.25,
  gamma 2) on *all* N x K class logits: a matched prediction's target is 1 for its cell's
  class and 0 for the others, an unmatched prediction's targets are all 0 ("no object");
  summed and divided by the number of matched pairs (at least 1), as RetinaNet and SparseInst
  normalise by the positives.
- :math:`L_{iou}` (section 5.7.3, only with the IoU head): binary cross-entropy between the
  matched predictions' IoU-objectness logits and the IoU of their binarised mask (p >= 0.5)
  with the target (a detached soft target in [0, 1]).

Interpretation (the thesis text is not available here): the issue numbers the mask loss
eq. 4.14-4.16 as a group; the split above (dice, BCE, sum) is our reading. Default weights
follow the lead's contract (2, 2, 2, 1); SparseInst uses 2, 2, 5, 1.

Targets whose masks are not at the resolution of the predicted masks (e.g. the model was
run with ``upsample_masks=False``) are resized to it (area mean when shrinking, bilinear
when enlarging), as SparseInst resizes its targets.

Inference score (section 4.5.3): :math:`s_i = p_i \cdot \mathrm{maskness}_i`, the class
probability times the mean mask probability inside the binarised mask; with the IoU head
optionally also times sigmoid(IoU logit) (:func:`instance_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from blastoseg.errors import BlastosegError
from blastoseg.train.sparse_matching import hungarian_match

__all__ = ["dice_loss", "instance_scores", "mask_iou", "sigmoid_focal_loss", "sparse_losses"]


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float | None = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise sigmoid focal loss (eq. 4.17 before the sum):
    alpha_t (1 - p_t)^gamma BCE(p, y); ``alpha=None`` for no class balancing."""
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    loss = (1.0 - p_t).clamp_min(0.0).pow(gamma) * bce
    if alpha is not None:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return loss


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-4
              ) -> torch.Tensor:
    """Per-pair dice loss (eq. 4.14): (M, ...) logits and (M, ...) targets -> (M,)
    1 - 2 sum(p t) / (sum p^2 + sum t^2 + eps), p = sigmoid(logits)."""
    p = torch.sigmoid(mask_logits).flatten(1)
    t = targets.flatten(1).to(p.dtype)
    num = 2.0 * (p * t).sum(-1)
    den = (p * p).sum(-1) + (t * t).sum(-1)
    return 1.0 - num / (den + eps)


@torch.no_grad()
def mask_iou(mask_logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5
             ) -> torch.Tensor:
    """Per-pair IoU of the binarised predicted masks (sigmoid >= threshold) and the targets
    (> 0.5): (M, ...) and (M, ...) -> (M,); 0 when both are empty."""
    p = (torch.sigmoid(mask_logits) >= threshold).flatten(1).float()
    t = (targets > 0.5).flatten(1).float()
    inter = (p * t).sum(-1)
    union = p.sum(-1) + t.sum(-1) - inter
    return inter / union.clamp_min(1.0)


def _get(out: Any, name: str) -> Any:
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)


def _resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    if masks.shape[-2] >= size[0] and masks.shape[-1] >= size[1]:  # shrink: area mean
        return F.interpolate(masks[:, None], size=size, mode="area")[:, 0]
    return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _check_targets(targets: Sequence[Mapping[str, Any]], batch: int, k: int,
                   device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(targets, Mapping) or len(targets) != batch:
        n = "a dict" if isinstance(targets, Mapping) else str(len(targets))
        raise BlastosegError(f"sparse_losses needs one target dict per image: {batch} "
                             f"images but {n} targets")
    out = []
    for b, t in enumerate(targets):
        if not isinstance(t, Mapping) or "labels" not in t or "masks" not in t:
            raise BlastosegError(f"target {b} must be a dict with 'labels' (G,) and 'masks' "
                                 f"(G, H, W)")
        labels = torch.as_tensor(t["labels"], device=device).reshape(-1).long()
        masks = torch.as_tensor(t["masks"], device=device).float()
        if masks.dim() == 2 and labels.numel() == 0 and masks.numel() == 0:
            masks = masks.reshape(0, 1, 1)
        if masks.dim() != 3 or masks.shape[0] != labels.numel():
            raise BlastosegError(f"target {b}: 'masks' must be (G, H, W) with G = "
                                 f"{labels.numel()} labels; got {tuple(masks.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise BlastosegError(f"target {b}: labels must be 0-based class indices in "
                                 f"0..{k - 1}; got {sorted(set(labels.tolist()))}")
        out.append((labels, masks))
    return out


def sparse_losses(out: Any, targets: Sequence[Mapping[str, Any]], *, lam: float = 0.8,
                  w_cls: float = 2.0, w_dice: float = 2.0, w_bce: float = 2.0,
                  w_iou: float = 1.0, focal_alpha: float | None = 0.25,
                  focal_gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """SparseSEU-Net loss of a batch (eq. 4.14-4.17; see the module docstring).

    Parameters
    ----------
    out
        A :class:`~blastoseg.models.sparse_seunet.SparseSEUNetOutput` (or a dict with
        ``class_logits`` (B, N, K), ``mask_logits`` (B, N, h, w), ``iou_logits`` (B, N) or
        None).
    targets
        One dict per image: ``"labels"`` (G,) int64 0-based class indices and ``"masks"``
        (G, H, W) float in [0, 1] (amodal cell masks); G may be 0.
    lam
        lambda of the matching cost.
    w_cls, w_dice, w_bce, w_iou
        Loss weights; ``w_iou`` is used only when the model has an IoU head.
    focal_alpha, focal_gamma
        Focal-loss parameters of the classification loss.

    Returns
    -------
    dict
        ``"loss"``: the weighted total (differentiable scalar); the unweighted terms
        ``"cls"``, ``"dice"``, ``"bce"``, ``"iou"`` (0 without the IoU head or without
        matches); ``"matched"``: the number of matched pairs (float tensor, no gradient).
    """
    cls_logits = _get(out, "class_logits")
    mask_logits = _get(out, "mask_logits")
    iou_logits = _get(out, "iou_logits")
    if not isinstance(cls_logits, torch.Tensor) or cls_logits.dim() != 3:
        raise BlastosegError("sparse_losses needs class_logits of shape (B, N, K)")
    if not isinstance(mask_logits, torch.Tensor) or mask_logits.dim() != 4 \
            or mask_logits.shape[:2] != cls_logits.shape[:2]:
        raise BlastosegError("sparse_losses needs mask_logits of shape (B, N, H, W) matching "
                             "the class logits' (B, N)")
    b, n, k = cls_logits.shape
    size = tuple(mask_logits.shape[-2:])
    gts = _check_targets(targets, b, k, cls_logits.device)

    # one-to-one matching per image (eq. 4.10-4.13), no gradient
    cls_prob = torch.sigmoid(cls_logits.detach())
    mask_prob = torch.sigmoid(mask_logits.detach()).flatten(2)
    batch_idx, pred_idx, gt_masks, gt_labels = [], [], [], []
    for i, (labels, masks) in enumerate(gts):
        masks = _resize_masks(masks, size)
        rows, cols = hungarian_match(cls_prob[i], mask_prob[i], labels, masks.flatten(1), lam)
        rows = rows.to(cls_logits.device)
        cols = cols.to(cls_logits.device)
        batch_idx.append(torch.full_like(rows, i))
        pred_idx.append(rows)
        gt_masks.append(masks[cols])
        gt_labels.append(labels[cols])
    bi = torch.cat(batch_idx)
    pi = torch.cat(pred_idx)
    m = int(bi.numel())
    norm = float(max(m, 1))
    # a +0.0 connected to the graph (so a batch without matches still back-propagates)
    zero = cls_logits.new_zeros(()) + mask_logits.sum() * 0.0 + cls_logits.sum() * 0.0

    # eq. 4.17: focal loss on all N predictions; matched -> their class, others -> no object
    cls_target = torch.zeros_like(cls_logits)
    if m:
        cls_target[bi, pi, torch.cat(gt_labels)] = 1.0
    l_cls = sigmoid_focal_loss(cls_logits, cls_target, focal_alpha, focal_gamma).sum() / norm

    if m:
        src = mask_logits[bi, pi]  # (M, h, w)
        tgt = torch.cat(gt_masks).to(src.dtype)
        l_dice = dice_loss(src, tgt).sum() / norm  # eq. 4.14
        l_bce = F.binary_cross_entropy_with_logits(src, tgt)  # eq. 4.15
        if iou_logits is not None:  # section 5.7.3: IoU-objectness
            iou_t = mask_iou(src.detach(), tgt)
            l_iou = F.binary_cross_entropy_with_logits(iou_logits[bi, pi], iou_t)
        else:
            l_iou = zero
    else:
        l_dice = l_bce = zero
        l_iou = zero + (iou_logits.sum() * 0.0 if iou_logits is not None else 0.0)
    total = w_cls * l_cls + w_dice * l_dice + w_bce * l_bce  # eq. 4.16 inside
    if iou_logits is not None:
        total = total + w_iou * l_iou
    return {"loss": total, "cls": l_cls, "dice": l_dice, "bce": l_bce, "iou": l_iou,
            "matched": torch.tensor(float(m), device=cls_logits.device)}


@torch.no_grad()
def instance_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                    iou_logits: torch.Tensor | None = None, mask_threshold: float = 0.5, *,
                    return_labels: bool = False
                    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Inference scores (section 4.5.3): s = class probability x maskness.

    Parameters
    ----------
    class_logits
        (..., N, K); the class probability is the best class's sigmoid.
    mask_logits
        (..., N, H, W) (any resolution); maskness = the mean mask probability over the
        pixels with probability >= ``mask_threshold`` (0 for an empty mask).
    iou_logits
        (..., N) IoU-objectness logits (section 5.7.3); given, the score is also multiplied by
        sigmoid(iou_logit). Pass None to ignore the IoU head.
    mask_threshold
        Binarisation threshold of the masks.
    return_labels
        Also return the (..., N) best class indices.

    Returns
    -------
    (..., N) scores in [0, 1] (and the labels when asked).
    """
    if class_logits.dim() < 2 or mask_logits.dim() != class_logits.dim() + 1 \
            or mask_logits.shape[:-2] != class_logits.shape[:-1]:
        raise BlastosegError(f"instance_scores needs class logits (..., N, K) and mask logits "
                             f"(..., N, H, W); got {tuple(class_logits.shape)} and "
                             f"{tuple(mask_logits.shape)}")
    cls_prob, labels = torch.sigmoid(class_logits.float()).max(dim=-1)
    p = torch.sigmoid(mask_logits.float()).flatten(-2)
    fg = (p >= mask_threshold).to(p.dtype)
    maskness = (p * fg).sum(-1) / fg.sum(-1).clamp_min(1.0)
    scores = cls_prob * maskness
    if iou_logits is not None:
        if iou_logits.shape != scores.shape:
            raise BlastosegError(f"iou_logits must be {tuple(scores.shape)}; got "
                                 f"{tuple(iou_logits.shape)}")
        scores = scores * torch.sigmoid(iou_logits.float())
    return (scores, labels) if return_labels else scores
