"""Occlusion branch of the amodal detector (Jang et al., section 4.1, eq. 2).

Four 3 x 3 convolutions on the FPN features predict, per pixel, the probability that the
pixel lies inside two or more amodal masks. The output of the second-to-last convolution
(C_occ channels) is concatenated onto the FPN features, so the RPN and the RoI heads see
C + C_occ channels and can use where cells overlap. The branch is shared across FPN levels,
like torchvision's RPN head: overlap looks the same at every scale, sharing keeps the
parameters at one branch, and every level handed to the RPN / RoI heads then carries
occlusion features with one consistent channel count. The loss (eq. 2, binary cross-entropy)
is averaged over the levels; the map returned at inference is the finest level's.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OcclusionBranch", "occlusion_loss", "occlusion_target_from_masks",
           "targets_to_padded"]


class OcclusionBranch(nn.Module):
    """Shared per-level occlusion predictor.

    Parameters
    ----------
    in_channels
        C, channels of each FPN level.
    channels
        C_occ, width of the branch (and of the features concatenated back).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.predict = nn.Conv2d(channels, 1, 3, padding=1)
        self.out_channels = in_channels + channels

    def forward(self, features: dict[str, torch.Tensor]
                ) -> tuple[OrderedDict[str, torch.Tensor], OrderedDict[str, torch.Tensor]]:
        """FPN levels -> (levels with C_occ channels appended, occlusion logits per level)."""
        fused: OrderedDict[str, torch.Tensor] = OrderedDict()
        logits: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, x in features.items():
            h = self.convs(x)              # second-to-last conv output: concatenated back
            logits[name] = self.predict(h)  # (B, 1, h, w)
            fused[name] = torch.cat([x, h], dim=1)
        return fused, logits


def occlusion_target_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) amodal masks -> (H, W) float map of pixels inside >= 2 masks."""
    if masks.numel() == 0:
        return masks.new_zeros(masks.shape[-2:], dtype=torch.float32)
    return ((masks > 0.5).sum(0) >= 2).float()


def targets_to_padded(maps: list[torch.Tensor], image_sizes: list[tuple[int, int]],
                      padded: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize each (H, W) map to its image's size after the transform and pad like the batch.

    Returns ``(target, valid)``, both (B, 1, Hp, Wp) float; ``valid`` is 1 on real pixels and
    0 on the transform's padding.
    """
    b = len(maps)
    ref = maps[0]
    target = ref.new_zeros((b, 1) + tuple(padded), dtype=torch.float32)
    valid = torch.zeros_like(target)
    for i, (m, (h, w)) in enumerate(zip(maps, image_sizes, strict=True)):
        m = m.to(torch.float32)[None, None]
        if tuple(m.shape[-2:]) != (h, w):
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        target[i, :, :h, :w] = m[0]
        valid[i, :, :h, :w] = 1.0
    return target, valid


def occlusion_loss(logits: dict[str, torch.Tensor], target: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
    """Eq. 2: BCE of every level's logits against the padded target, mean over levels.

    The target is area-averaged to each level's size (soft targets near overlap borders);
    padding is ignored.
    """
    losses = []
    for lg in logits.values():
        size = lg.shape[-2:]
        t = F.interpolate(target, size=size, mode="area")
        v = (F.interpolate(valid, size=size, mode="area") > 0.5).to(lg.dtype)
        bce = F.binary_cross_entropy_with_logits(lg, t.to(lg.dtype), reduction="none")
        losses.append((bce * v).sum() / v.sum().clamp_min(1.0))
    return torch.stack(losses).mean()
