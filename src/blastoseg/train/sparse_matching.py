r"""One-to-one Hungarian matching of SparseSEU-Net predictions to cells (thesis eq. 4.10-4.13).

Each of the N predictions i and each of the G ground-truth cells j get a matching score

.. math::

    C_{ij} = p_{i, c_j}^{\,1 - \lambda} \cdot \mathrm{dice}(m_i, t_j)^{\lambda},
    \qquad
    \mathrm{dice}(m, t) = \frac{2 \sum_x m(x) t(x)}{\sum_x m(x)^2 + \sum_x t(x)^2},

with :math:`p_{i, c_j}` the predicted probability of cell j's class, :math:`m_i` the
predicted mask probabilities, :math:`t_j` the target mask and :math:`\lambda = 0.8`; the
one-to-one assignment maximising :math:`\sum C_{ij}` is found with
``scipy.optimize.linear_sum_assignment`` (the Hungarian algorithm). Unmatched predictions are
"no object" for the classification loss.

Interpretation (the thesis text is not available here): the issue numbers the matching
eq. 4.10-4.13 as a group (dice similarity, class term, product cost, assignment); the dice
uses squared sums in the denominator and a 1e-4 guard as in SparseInst (Cheng et al. 2022), so
a prediction of all zeros has similarity 0, not NaN.

More cells than predictions (G > N): a one-to-one assignment can only cover N cells;
``linear_sum_assignment`` then matches the N cells that give the best total score and the
other G - N cells stay unmatched (they add no mask loss). This is a truncation, not an
error, so one crowded crop does not stop a training run; :func:`hungarian_match` warns once
per call when it happens (raise N, ``num_instances``, if it is common).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from blastoseg.errors import BlastosegError

__all__ = ["assign_max", "dice_similarity", "hungarian_match", "matching_scores"]


def dice_similarity(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-4
                    ) -> torch.Tensor:
    """Pairwise dice similarity of (N, P) predicted mask probabilities and (G, P) target
    masks in [0, 1] -> (N, G)."""
    pred = pred.float()
    target = target.float()
    inter = pred @ target.T
    denom = (pred * pred).sum(-1)[:, None] + (target * target).sum(-1)[None, :]
    return 2.0 * inter / (denom + eps)


def matching_scores(class_prob: torch.Tensor, mask_prob: torch.Tensor,
                    gt_classes: torch.Tensor, gt_masks: torch.Tensor, lam: float = 0.8
                    ) -> torch.Tensor:
    """The (N, G) score matrix C = p_cls^(1 - lam) * dice^lam (eq. 4.10-4.12).

    ``mask_prob`` (N, P) or (N, H, W) and ``gt_masks`` (G, P) or (G, H, W) are flattened.
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise BlastosegError(f"lam must be in [0, 1], got {lam!r}")
    if class_prob.dim() != 2:
        raise BlastosegError(f"class_prob must be (N, K); got {tuple(class_prob.shape)}")
    n, k = class_prob.shape
    mask_prob = mask_prob.reshape(mask_prob.shape[0], -1) if mask_prob.dim() != 2 else mask_prob
    gt_masks = gt_masks.reshape(gt_masks.shape[0], -1) if gt_masks.dim() != 2 else gt_masks
    if mask_prob.shape[0] != n:
        raise BlastosegError(f"mask_prob has {mask_prob.shape[0]} predictions but class_prob "
                             f"{n}")
    gt_classes = torch.as_tensor(gt_classes, device=class_prob.device).reshape(-1).long()
    g = gt_classes.numel()
    if gt_masks.shape[0] != g:
        raise BlastosegError(f"{g} ground-truth classes but {gt_masks.shape[0]} ground-truth "
                             f"masks")
    if g and mask_prob.shape[1] != gt_masks.shape[1]:
        raise BlastosegError(f"predicted masks have {mask_prob.shape[1]} pixels but the "
                             f"ground-truth masks {gt_masks.shape[1]}; resize one to the other")
    if g and (int(gt_classes.min()) < 0 or int(gt_classes.max()) >= k):
        raise BlastosegError(f"ground-truth classes must be 0-based indices in 0..{k - 1}; "
                             f"got {sorted(set(gt_classes.tolist()))}")
    if g == 0:
        return class_prob.new_zeros((n, 0))
    dice = dice_similarity(mask_prob, gt_masks.to(mask_prob.device)).clamp(0.0, 1.0)
    p_cls = class_prob.float()[:, gt_classes].clamp(0.0, 1.0)  # (N, G)
    return p_cls.pow(1.0 - lam) * dice.pow(lam)


def assign_max(scores: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one assignment maximising the summed scores of an (N, G) matrix (eq. 4.13).

    Returns (pred_idx, gt_idx), int64 tensors of length min(N, G), sorted by pred_idx.
    Non-finite scores count as the worst possible.
    """
    s = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else \
        np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise BlastosegError(f"scores must be an (N, G) matrix; got shape {s.shape}")
    if s.size == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        s[bad] = (s[~bad].min() if (~bad).any() else 0.0) - 1.0
    rows, cols = linear_sum_assignment(s, maximize=True)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


@torch.no_grad()
def hungarian_match(class_prob: torch.Tensor, mask_prob: torch.Tensor,
                    gt_classes: torch.Tensor, gt_masks: torch.Tensor, lam: float = 0.8
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Match one image's N predictions one-to-one to its G cells (eq. 4.10-4.13).

    Parameters
    ----------
    class_prob
        (N, K) class probabilities (sigmoid of the class logits).
    mask_prob
        (N, H*W) (or (N, H, W)) mask probabilities.
    gt_classes
        (G,) 0-based class indices.
    gt_masks
        (G, H*W) (or (G, H, W)) target masks in [0, 1].
    lam
        lambda: weight of the mask term (the class term gets 1 - lambda).

    Returns
    -------
    (pred_idx, gt_idx)
        int64 tensors on the CPU of length min(N, G): prediction ``pred_idx[k]`` is matched
        to cell ``gt_idx[k]``. G = 0 gives two empty tensors. G > N matches the N best cells
        and warns (see the module docstring).
    """
    scores = matching_scores(class_prob, mask_prob, gt_classes, gt_masks, lam)
    n, g = scores.shape
    if g > n:
        warnings.warn(f"{g} ground-truth cells but only {n} predictions: {g - n} cells stay "
                      f"unmatched in this image (raise num_instances if this is common)",
                      RuntimeWarning, stacklevel=2)
    return assign_max(scores)
