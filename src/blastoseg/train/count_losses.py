"""Cell-Net's loss (S2 eq. 2): content-based MSE (CBMSE), and plain MSE as its ablation.

Our reading of eq. 2: the pixel-wise squared error between the predicted and the target
density is weighted by a content-based attention map M_t computed from the target,

    L = 1 / (B H W) * sum_b sum_p  M_t(p) * (D_pred(p) - D_t(p))^2,
    M_t(p) = 1 + alpha * [D_t(p) > tau * max(D_t)],

so that errors where there is cell content (inside the dots) weigh 1 + alpha and the large
empty background weighs 1: with most of the map empty, plain MSE is dominated by background
pixels and a network can lower it by predicting a flat, too-low map. With alpha = 0 (M_t all
ones) CBMSE is exactly the MSE. Both are computed on ``scale`` x the densities (each dot
sums to 1, so densities are ~1e-3 and their squares vanish in float32 sums).
"""

from __future__ import annotations

import torch

__all__ = ["LOSSES", "attention_map", "cbmse_loss", "count_loss", "mse_loss"]

DEFAULT_ALPHA = 4.0
DEFAULT_TAU = 0.05


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                         "densities differ in shape")
    if pred.dim() != 4:
        raise ValueError(f"densities must be (B, 1, H, W), got {tuple(pred.shape)}")


def attention_map(target: torch.Tensor, alpha: float = DEFAULT_ALPHA, tau: float = DEFAULT_TAU
                  ) -> torch.Tensor:
    """M_t of eq. 2: 1 + alpha where the target density exceeds tau x its per-image maximum."""
    peak = target.amax(dim=(-2, -1), keepdim=True)
    content = (target > tau * peak) & (peak > 0)
    return 1.0 + float(alpha) * content.to(target.dtype)


def cbmse_loss(pred: torch.Tensor, target: torch.Tensor, *, alpha: float = DEFAULT_ALPHA,
               tau: float = DEFAULT_TAU, scale: float = 100.0) -> torch.Tensor:
    """Content-based MSE (eq. 2) of (B, 1, H, W) densities."""
    _check(pred, target)
    m = attention_map(target.detach(), alpha, tau)
    err = (pred - target) * float(scale)
    return (m * err * err).mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor, *, scale: float = 100.0,
             **_: float) -> torch.Tensor:
    """Plain pixel MSE (the ablation of CBMSE)."""
    _check(pred, target)
    err = (pred - target) * float(scale)
    return (err * err).mean()


def count_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the integrals, in cells: always logged; optimised only
    with ``loss.count_weight`` > 0 (our addition; the paper's loss is eq. 2 alone)."""
    return (pred.sum(dim=(-3, -2, -1)) - target.sum(dim=(-3, -2, -1))).abs().mean()


LOSSES = {"cbmse": cbmse_loss, "mse": mse_loss}
