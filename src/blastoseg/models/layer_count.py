"""Per-pixel cell-layer count: how many blastomeres lie on top of each other at a pixel.

Why (``docs/counting_analysis.md``): the amodal detector under-counts 6-8-cell embryos because
a cell lying under another has nearly the same outline, and mask NMS cannot tell it from a
duplicate detection. The occlusion branch of section 4.1 only says "two or more cells here";
trained with its loss weight 0.01 it saturates near 0.55 and cannot say 3 layers from 5. The
*layer rule* (:mod:`blastoseg.predict.amodal_post`) counts cells as
``sum(layers over the kept cells' union) / mean cell area``; reading the *true* layer map, it
reaches 78 % exact count on held-out synthetic frames against 52 % with the occlusion map.

This branch predicts that map: a K-way classification of every pixel into 0, 1, ..., K-1 or
more covering amodal masks, whose expectation ``sum_k k p_k`` is the expected number of
layers. The target is free wherever amodal masks exist (``masks.sum(0)``). It is an addition
to Jang et al., not part of the paper; it reads the FPN's two finest levels (strides 4 and 8,
the coarser one upsampled and concatenated, so that a pixel sees a whole blastomere), with
dilated convolutions for context, and feeds nothing back into the detector: the detector's
outputs are the same with or without it, so it can be trained on a frozen detector.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerBranch", "expected_layers", "layer_loss", "layer_targets"]


class LayerBranch(nn.Module):
    """FPN features -> per-pixel layer-count logits (B, K, H/4, W/4).

    Parameters
    ----------
    in_channels
        C, channels of each FPN level (before the occlusion features are appended).
    channels
        Width of the branch.
    classes
        K: layer counts 0 .. K-1, the last one meaning "K-1 or more".
    """

    def __init__(self, in_channels: int, channels: int, classes: int) -> None:
        super().__init__()
        if classes < 3:
            raise ValueError(f"a layer branch needs >= 3 classes (0, 1, 2+ cells); got {classes}")
        self.classes = classes
        self.convs = nn.Sequential(
            nn.Conv2d(2 * in_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.predict = nn.Conv2d(channels, classes, 1)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        levels = list(features.values())
        fine, coarse = levels[0], levels[1]
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear",
                               align_corners=False)
        return self.predict(self.convs(torch.cat([fine, coarse], dim=1)))


def expected_layers(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) logits -> (B, 1, h, w) expected number of layers ``sum_k k p_k``."""
    k = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
    return (logits.softmax(dim=1) * k[None, :, None, None]).sum(dim=1, keepdim=True)


def layer_targets(masks_per_image: list[torch.Tensor], image_sizes: list[tuple[int, int]],
                  padded: tuple[int, int], classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth layer maps as one-hot targets, padded like the batch.

    ``masks_per_image``: each image's (N, h, w) amodal masks after the detector's transform
    (so at ``image_sizes[i]``). Returns ``(onehot, valid)``: (B, K, Hp, Wp) float with the
    count clipped to K-1, and (B, 1, Hp, Wp) with 1 on real pixels.
    """
    b = len(masks_per_image)
    ref = masks_per_image[0]
    onehot = ref.new_zeros((b, classes) + tuple(padded), dtype=torch.float32)
    valid = ref.new_zeros((b, 1) + tuple(padded), dtype=torch.float32)
    for i, (m, (h, w)) in enumerate(zip(masks_per_image, image_sizes, strict=True)):
        if m.numel() == 0:
            count = torch.zeros((h, w), dtype=torch.long, device=ref.device)
        else:
            count = (m > 0.5).sum(0).clamp_max(classes - 1).long()
            if tuple(count.shape) != (h, w):
                count = F.interpolate(count[None, None].float(), size=(h, w),
                                      mode="nearest")[0, 0].long()
        onehot[i, :, :h, :w] = F.one_hot(count, classes).permute(2, 0, 1).float()
        valid[i, :, :h, :w] = 1.0
    return onehot, valid


def layer_loss(logits: torch.Tensor, onehot: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits against the area-averaged (soft) one-hot targets.

    The targets are area-averaged to the logits' size, so a pixel of the stride-4 map on a
    cell border gets the mix of the counts it covers; padding is ignored.
    """
    size = logits.shape[-2:]
    t = F.interpolate(onehot, size=size, mode="area")
    v = (F.interpolate(valid, size=size, mode="area") > 0.5).to(logits.dtype)
    ce = -(t * F.log_softmax(logits, dim=1)).sum(dim=1, keepdim=True)
    return (ce * v).sum() / v.sum().clamp_min(1.0)
