r"""Losses of the SE-U-Net (thesis eq. 4.2, 4.5 and the section 5.1 alternative).

Eq. 4.2: the total loss is the weighted sum of per-head losses,
:math:`L = \sum_h w_h L_h`, with :math:`L_h` the binary cross-entropy of head h (cytoplasm,
nuclei, border, background) and a configurable loss for the overlap head. A head whose target
is missing for a sample (e.g. no nucleus mask for synthetic embryos) is skipped *for that
sample*: :math:`L_h` is the mean of the per-sample losses over the samples that have the
target (0, with a gradient of zeros, when no sample has it).

Overlap-head losses (``kind``), each a per-pixel loss :math:`\ell(x)` averaged over pixels,
with p = sigmoid(logit), y the 0/1 target and P the probability map in [0, 1]
(:func:`blastoseg.targets.probability_map`: high near cell outlines, nuclei or overlaps,
0.1 on the background):

``"bce"``
    :math:`\ell = \mathrm{BCE}(p, y) = -[y \log p + (1 - y) \log(1 - p)]`.
``"focal"``
    the standard focal loss (Lin et al. 2017): :math:`\ell = \alpha_t (1 - p_t)^\gamma
    \mathrm{BCE}(p, y)`, :math:`p_t = p y + (1 - p)(1 - y)`, :math:`\alpha_t = \alpha y +
    (1 - \alpha)(1 - y)` (``alpha=None``: no class balancing).
``"focal_reweighted"`` (eq. 4.5)
    :math:`\ell = P \cdot \alpha_t (1 - p_t)^\gamma \mathrm{BCE}(p, y)`.

    *Our reading of eq. 4.5.* The thesis writes the reweighting through the target,
    :math:`y' = y(1 - P)`. Taken literally as a soft target inside the focal loss it would
    push the predicted overlap probability towards 0 exactly where P is 1 - on the outlines
    and overlaps the map is built to emphasise - and towards 1 - P inside overlaps, which
    contradicts the purpose stated for the maps (hard pixels near borders and overlaps should
    count *more*). We therefore read P as the per-pixel weight that the reweighting brings:
    the modulated focal term of a pixel is scaled by P, so a pixel on an outline or overlap
    (P = 1) keeps its full focal loss while background pixels (P = 0.1) count a tenth.
    With P = 1 everywhere (variant ``"none"``) this is exactly ``"focal"``. The literal
    soft-target form is available as ``"focal_soft_target"`` for comparison.
``"eq5_1"`` (section 5.1 alternative)
    the probability map weights the plain per-pixel BCE directly, without the focal term:
    :math:`\ell = P \cdot \mathrm{BCE}(p, y)`; with P = 1 it is ``"bce"``.
``"focal_soft_target"``
    literal eq. 4.5: the focal loss against the soft target :math:`y' = y(1 - P)`
    (:math:`p_t = p y' + (1 - p)(1 - y')`, BCE against y').

All losses are means over pixels (not normalised by the mean of P), so the weighted losses are
smaller in value than their unweighted counterparts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from blastoseg.errors import BlastosegError

__all__ = ["OVERLAP_LOSSES", "overlap_head_loss", "seunet_loss"]

#: Loss kinds for the overlap head.
OVERLAP_LOSSES = ("bce", "focal", "focal_reweighted", "eq5_1", "focal_soft_target")
_NEEDS_MAP = ("focal_reweighted", "eq5_1", "focal_soft_target")
_REDUCTIONS = ("mean", "sample", "none")


def _as_b1hw(t: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """Bring (B, H, W) or (B, 1, H, W) tensors to the logits' shape (B, 1, H, W)."""
    t = torch.as_tensor(t, device=like.device)
    if t.dim() == like.dim() - 1:
        t = t.unsqueeze(1)
    if t.shape != like.shape:
        raise BlastosegError(f"{name} has shape {tuple(t.shape)} but the logits are "
                             f"{tuple(like.shape)}")
    return t.to(like.dtype)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    per_sample = loss.flatten(1).mean(dim=1)
    return per_sample if reduction == "sample" else per_sample.mean()


def overlap_head_loss(logits: torch.Tensor, target: torch.Tensor,
                      prob_map: torch.Tensor | None = None, kind: str = "bce", *,
                      gamma: float = 2.0, alpha: float | None = 0.25,
                      reduction: str = "mean") -> torch.Tensor:
    """The overlap head's loss (see the module docstring for the formulas).

    Parameters
    ----------
    logits
        (B, 1, H, W) raw scores (before the sigmoid).
    target
        (B, 1, H, W) or (B, H, W) target in [0, 1].
    prob_map
        (B, 1, H, W) or (B, H, W) probability map P in [0, 1]; required by
        ``"focal_reweighted"``, ``"eq5_1"`` and ``"focal_soft_target"``, ignored otherwise.
    kind
        One of :data:`OVERLAP_LOSSES`.
    gamma
        Focusing parameter of the focal kinds.
    alpha
        Weight of the positive class in the focal kinds (negatives get 1 - alpha); None: no
        class balancing. 0.25 is Lin et al.'s default.
    reduction
        ``"mean"`` (a scalar), ``"sample"`` (the (B,) per-sample pixel means) or ``"none"``
        (the per-pixel loss map).
    """
    if kind not in OVERLAP_LOSSES:
        raise BlastosegError(f"unknown overlap loss {kind!r}; choose one of "
                             f"{', '.join(OVERLAP_LOSSES)}")
    if reduction not in _REDUCTIONS:
        raise BlastosegError(f"unknown reduction {reduction!r}; choose one of {_REDUCTIONS}")
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise BlastosegError(f"overlap logits must be (B, 1, H, W); got {tuple(logits.shape)}")
    y = _as_b1hw(target, logits, "overlap target")
    weight = None
    if kind in _NEEDS_MAP:
        if prob_map is None:
            raise BlastosegError(f"overlap loss {kind!r} needs a probability map; compute one "
                                 f"with blastoseg.targets.probability_map or use 'bce'/'focal'")
        weight = _as_b1hw(prob_map, logits, "probability map")
    if kind == "focal_soft_target":
        y = y * (1.0 - weight)
        weight = None
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    if kind in ("bce", "eq5_1"):
        loss = bce
    else:
        p = torch.sigmoid(logits)
        p_t = p * y + (1.0 - p) * (1.0 - y)
        loss = (1.0 - p_t).clamp_min(0.0).pow(gamma) * bce
        if alpha is not None:
            loss = (alpha * y + (1.0 - alpha) * (1.0 - y)) * loss
    if weight is not None:
        loss = weight * loss
    return _reduce(loss, reduction)


def seunet_loss(logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                target_present: Mapping[str, torch.Tensor] | None = None,
                prob_map: torch.Tensor | None = None,
                weights: Mapping[str, float] | None = None, *,
                overlap_loss: str = "bce", gamma: float = 2.0, alpha: float | None = 0.25
                ) -> dict[str, torch.Tensor]:
    """Eq. 4.2: the weighted sum of the heads' losses, skipping missing targets per sample.

    Parameters
    ----------
    logits
        Head name -> (B, 1, H, W) logits (``SEUNetOutput.logits``).
    targets
        Head name -> (B, 1, H, W) or (B, H, W) 0/1 targets. A head absent here is skipped
        entirely; for a sample without the target, put anything (e.g. zeros) and mark it
        absent in ``target_present``.
    target_present
        Head name -> (B,) bool: which samples have the head's target. A head not listed has
        its target in every sample (when it is in ``targets``).
    prob_map
        (B, 1, H, W) or (B, H, W) probability map for the overlap head's loss.
    weights
        Head name -> w_h (default 1.0 for a head not listed).
    overlap_loss
        Loss kind of the ``"overlap"`` head (:data:`OVERLAP_LOSSES`); the other heads use BCE.
    gamma, alpha
        Focal-loss parameters for the overlap head.

    Returns
    -------
    dict
        ``"loss"``: the weighted total (scalar, differentiable); and for each head in
        ``logits`` its unweighted term L_h (scalar; 0 when no sample has its target).
    """
    target_present = target_present or {}
    weights = weights or {}
    if not logits:
        raise BlastosegError("seunet_loss needs the logits of at least one head")
    first = next(iter(logits.values()))
    total = first.sum() * 0.0  # a zero on the right device/dtype, connected to the graph
    out: dict[str, torch.Tensor] = {}
    for head, logit in logits.items():
        batch = logit.shape[0]
        if head not in targets or targets[head] is None:
            out[head] = logit.sum() * 0.0
            continue
        present = target_present.get(head)
        if present is None:
            present = torch.ones(batch, dtype=torch.bool, device=logit.device)
        else:
            present = torch.as_tensor(present, device=logit.device).reshape(-1).bool()
            if present.numel() != batch:
                raise BlastosegError(f"target_present[{head!r}] has {present.numel()} entries "
                                     f"for a batch of {batch}")
        y = _as_b1hw(targets[head], logit, f"target of head {head!r}")
        # a missing target may hold anything (NaN too): zero it so no NaN reaches the gradient
        y = torch.where(present.view(-1, 1, 1, 1), y, torch.zeros_like(y))
        if head == "overlap":
            per_sample = overlap_head_loss(logit, y, prob_map, overlap_loss,
                                           gamma=gamma, alpha=alpha, reduction="sample")
        else:
            per_sample = F.binary_cross_entropy_with_logits(
                logit, y, reduction="none").flatten(1).mean(dim=1)
        mask = present.to(per_sample.dtype)
        term = (per_sample * mask).sum() / mask.sum().clamp_min(1.0)
        out[head] = term
        total = total + float(weights.get(head, 1.0)) * term
    return {"loss": total, **out}
