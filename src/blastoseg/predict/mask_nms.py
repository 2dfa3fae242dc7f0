"""Mask NMS: the one rule every predictor uses to drop duplicate detections.

Box NMS must stay lenient for cells that overlap (two stacked blastomeres can share 90 % of
their box), so duplicates are removed on the masks themselves: greedily, best score first, a
candidate is dropped when its mask IoU with an already kept one is above the threshold
(``mask_nms_iou``; 1.0 keeps everything). The amodal post-processing, its calibration, the
brightfield decoder and the merging of a tiled frame's windows all call :func:`mask_nms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["as_binary", "mask_nms", "mask_overlaps"]


def as_binary(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) probabilities (float, or uint8 0-255) or bool -> bool masks at 0.5."""
    m = np.asarray(masks)
    if m.dtype == bool:
        return m
    if m.dtype == np.uint8:
        return m >= 128
    return m >= 0.5


def mask_overlaps(masks: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise mask IoU (N, N) and areas (N,) of (N, H, W) masks, binarised at 0.5 (bool
    masks as they are). A torch tensor is compared where it lies (e.g. on the GPU); the
    results are numpy either way."""
    if isinstance(masks, torch.Tensor):
        if masks.dtype != torch.bool:
            masks = masks >= (128 if masks.dtype == torch.uint8 else 0.5)
        flat = masks.flatten(1).float()
        inter = flat @ flat.T
        area = flat.sum(1)
        iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1.0)
        return iou.cpu().numpy(), area.cpu().numpy()
    b = as_binary(masks)
    flat = b.reshape(len(b), int(np.prod(b.shape[1:]))).astype(np.float32)  # N = 0 too
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0)
    return iou, area


def mask_nms(iou: np.ndarray, scores: Sequence[float] | np.ndarray, iou_threshold: float,
             candidates: Sequence[int] | np.ndarray | None = None, *,
             kept: Sequence[int] = ()) -> list[int]:
    """Greedy NMS on a mask-IoU matrix (:func:`mask_overlaps`): the indices kept, best score
    first (equal scores keep their order).

    ``iou[i, j]`` only has to be right where masks ``i`` and ``j`` overlap at all (a sparse
    caller may leave the rest 0). ``candidates`` restricts the candidates (e.g. those above
    the score threshold); ``iou_threshold >= 1`` keeps them all. ``kept``: indices kept
    beforehand, whatever their overlaps; they come first in the result and suppress the
    candidates like any kept one.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    idx = np.arange(len(s)) if candidates is None else np.asarray(candidates, dtype=int)
    order = idx[np.argsort(-s[idx], kind="stable")].tolist()
    keep = [int(i) for i in kept]
    if iou_threshold >= 1.0:
        return keep + order
    iou = np.asarray(iou)
    for i in order:
        if not keep or iou[i, keep].max() <= iou_threshold:
            keep.append(i)
    return keep
