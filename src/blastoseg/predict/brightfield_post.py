"""Post-processing of SparseSEU-Net outputs (S4 section 4.5.3): scores = class probability
x maskness, mask NMS, decoding to masks, and the merging of candidates from overlapping
windows of a tiled frame back into frame coordinates. Used by
:class:`~blastoseg.predict.brightfield.BrightfieldPredictor` and the training task's
validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from blastoseg.instances import FrameInstances
from blastoseg.predict.mask_nms import mask_nms, mask_overlaps

_MARGIN = 2  # working px kept around a mask's box (bilinear resize reaches 1 px beyond it)


# --- post-processing ---------------------------------------------------------------------------

def select_predictions(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                       iou_logits: torch.Tensor | None = None, *,
                       score_threshold: float = 0.3, mask_threshold: float = 0.5,
                       mask_nms_iou: float | None = 0.8, use_iou: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The predictions of ONE image that pass the post-processing (module docstring).

    Parameters
    ----------
    class_logits
        (N, K) class logits (sigmoid, focal-loss style: no background column).
    mask_logits
        (N, h, w) mask logits at any resolution (the predictor scores them at the
        branch resolution and up-samples only the kept ones).
    iou_logits
        (N,) IoU-objectness logits or None.

    Returns
    -------
    indices (n,) into the N predictions, scores (n,), labels (n,) int64 (0-based class
    index); best score first.
    """
    cls_score, labels = torch.sigmoid(class_logits.float()).max(dim=-1)
    prob = torch.sigmoid(mask_logits.float())
    binary = prob >= mask_threshold
    area = binary.flatten(1).sum(dim=1)
    maskness = (prob * binary).flatten(1).sum(dim=1) / area.clamp_min(1)
    scores = cls_score * maskness
    if iou_logits is not None and use_iou:
        scores = scores * torch.sigmoid(iou_logits.float().reshape(-1))
    keep = torch.nonzero((scores >= score_threshold) & (area > 0)).flatten()
    keep = keep[torch.argsort(scores[keep], descending=True)]
    if mask_nms_iou is not None and len(keep) > 1:
        iou, _ = mask_overlaps(binary[keep])
        kept = mask_nms(iou, scores[keep].cpu().numpy(), float(mask_nms_iou))
        keep = keep[torch.as_tensor(kept, dtype=torch.long, device=keep.device)]
    return keep, scores[keep], labels[keep]


def decode_instances(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     iou_logits: torch.Tensor | None = None, *, score_threshold: float = 0.3,
                     mask_threshold: float = 0.5, mask_nms_iou: float | None = 0.8,
                     use_iou: bool = True, largest_component: bool = False) -> FrameInstances:
    """:func:`select_predictions` as FrameInstances at the logits' resolution (binary masks
    ``sigmoid(logit) >= mask_threshold``, each reduced to its :func:`largest_component_of` if
    asked; ``class_ids`` = class index + 1)."""
    keep, scores, labels = select_predictions(
        class_logits, mask_logits, iou_logits, score_threshold=score_threshold,
        mask_threshold=mask_threshold, mask_nms_iou=mask_nms_iou, use_iou=use_iou)
    masks = (torch.sigmoid(mask_logits[keep].float()) >= mask_threshold).cpu().numpy()
    if largest_component:
        masks = np.stack([largest_component_of(m) for m in masks]) if len(masks) else masks
    return FrameInstances(masks=masks, class_ids=(labels + 1).cpu().numpy(),
                          scores=scores.cpu().numpy())


# --- candidates in frame coordinates ----------------------------------------------------------

@dataclass
class _Candidate:
    """One predicted instance: its mask probability on a box of the working frame."""

    score: float
    label: int
    y0: int
    x0: int
    prob: np.ndarray  # (h, w) float32 on rows y0.., cols x0.. of the working frame
    binary: np.ndarray  # prob >= mask threshold
    truncated: bool = False

    def overlap(self, other: _Candidate) -> int:
        ya, yb = max(self.y0, other.y0), min(self.y0 + self.binary.shape[0],
                                              other.y0 + other.binary.shape[0])
        xa, xb = max(self.x0, other.x0), min(self.x0 + self.binary.shape[1],
                                              other.x0 + other.binary.shape[1])
        if ya >= yb or xa >= xb:
            return 0
        a = self.binary[ya - self.y0:yb - self.y0, xa - self.x0:xb - self.x0]
        b = other.binary[ya - other.y0:yb - other.y0, xa - other.x0:xb - other.x0]
        return int(np.count_nonzero(a & b))

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.binary))


def _candidates(scores, labels, prob: torch.Tensor, threshold: float, oy: int, ox: int,
                edges: tuple[bool, bool, bool, bool] = (False, False, False, False)
                ) -> list[_Candidate]:
    """Box-cropped candidates of one window; ``edges`` = (top, bottom, left, right) window
    sides that lie inside the frame (an instance touching one is ``truncated``)."""
    out = []
    probs = prob.cpu().numpy()
    h, w = probs.shape[1:]
    for s, lab, p in zip(scores.tolist(), labels.tolist(), probs, strict=True):
        b = p >= threshold
        rows, cols = np.flatnonzero(b.any(axis=1)), np.flatnonzero(b.any(axis=0))
        if not len(rows):
            continue
        y0, y1 = max(rows[0] - _MARGIN, 0), min(rows[-1] + 1 + _MARGIN, h)
        x0, x1 = max(cols[0] - _MARGIN, 0), min(cols[-1] + 1 + _MARGIN, w)
        top, bottom, left, right = edges
        truncated = ((top and rows[0] == 0) or (bottom and rows[-1] == h - 1)
                     or (left and cols[0] == 0) or (right and cols[-1] == w - 1))
        out.append(_Candidate(float(s), int(lab), int(y0 + oy), int(x0 + ox),
                              np.ascontiguousarray(p[y0:y1, x0:x1]),
                              np.ascontiguousarray(b[y0:y1, x0:x1]), bool(truncated)))
    return out


def _merge(cands: list[_Candidate], merge_iou: float) -> list[_Candidate]:
    """Tiled frames: whole instances by mask NMS, then cut ones not already covered."""
    whole = [c for c in cands if not c.truncated]
    cut = sorted((c for c in cands if c.truncated), key=lambda c: (-c.area, -c.score))
    kept = [whole[i] for i in mask_nms(_pair_ious(whole), [c.score for c in whole], merge_iou)]
    for c in cut:
        area = max(c.area, 1)
        covered = sum(c.overlap(k) for k in kept)  # upper bound of the covered pixels
        if covered / area <= 0.5:
            kept.append(c)
    return sorted(kept, key=lambda c: -c.score)


def _pair_ious(cands: list[_Candidate]) -> np.ndarray:
    """Mask IoU of every pair of candidates whose boxes meet (0 for the others: a tiled frame
    has hundreds of candidates, each touching a few)."""
    n = len(cands)
    iou = np.zeros((n, n))
    if n < 2:
        return iou
    y0 = np.array([c.y0 for c in cands])
    x0 = np.array([c.x0 for c in cands])
    y1 = y0 + np.array([c.binary.shape[0] for c in cands])
    x1 = x0 + np.array([c.binary.shape[1] for c in cands])
    meet = ((np.maximum(y0[:, None], y0[None]) < np.minimum(y1[:, None], y1[None]))
            & (np.maximum(x0[:, None], x0[None]) < np.minimum(x1[:, None], x1[None])))
    area = [c.area for c in cands]
    for i, j in zip(*np.nonzero(np.triu(meet, 1)), strict=True):
        inter = cands[i].overlap(cands[j])
        iou[i, j] = iou[j, i] = inter / max(area[i] + area[j] - inter, 1)
    return iou


def largest_component_of(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of a bool mask (a cell is one piece; the dot-product
    masks m_i = k_i . M can leave small detached specks on similar-looking cells)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def frame_crops(cands: list[_Candidate], work_shape: tuple[int, int], shape: tuple[int, int],
                threshold: float, one_piece: bool = False
                ) -> list[tuple[int, int, np.ndarray] | None]:
    """Each candidate's mask at the input size as ``(y0, x0, crop)``: a bool crop of its
    bounding box, whose top-left pixel is (y0, x0) of the input frame (None when the mask is
    empty at the input size). With ``one_piece`` each mask is reduced to its
    :func:`largest_component_of`. Work and memory are per cell (its box), never cells x H x W.
    """
    out: list[tuple[int, int, np.ndarray] | None] = []
    for c in cands:
        box = c.binary if work_shape == shape else None
        y_lo, x_lo = c.y0, c.x0
        if box is None:
            y_lo, x_lo, box = _resized_crop(c, work_shape, shape, threshold)
        if box is not None and one_piece:
            box = largest_component_of(box)
        out.append(None if box is None else _tight(y_lo, x_lo, box))
    return out


def _tight(y0: int, x0: int, crop: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    if not len(rows):
        return None
    return (y0 + int(rows[0]), x0 + int(cols[0]),
            np.ascontiguousarray(crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]))


def _resized_crop(c: _Candidate, work_shape: tuple[int, int], shape: tuple[int, int],
                  threshold: float) -> tuple[int, int, np.ndarray | None]:
    """A candidate's probability box resampled (bilinear) onto the input frame's pixels."""
    h, w = shape
    sy, sx = work_shape[0] / h, work_shape[1] / w
    ch, cw = c.prob.shape
    # input pixel Y sits at working coordinate (Y + 0.5) * sy - 0.5 (pixel centres);
    # a box at the frame's edge extends to the edge (nearest value beyond the centres)
    y_lo = 0 if c.y0 == 0 else max(int(np.ceil((c.y0 + 0.5) / sy - 0.5)), 0)
    y_hi = h if c.y0 + ch >= work_shape[0] else \
        min(int(np.floor((c.y0 + ch - 0.5) / sy - 0.5)) + 1, h)
    x_lo = 0 if c.x0 == 0 else max(int(np.ceil((c.x0 + 0.5) / sx - 0.5)), 0)
    x_hi = w if c.x0 + cw >= work_shape[1] else \
        min(int(np.floor((c.x0 + cw - 0.5) / sx - 0.5)) + 1, w)
    if y_lo >= y_hi or x_lo >= x_hi:
        return y_lo, x_lo, None
    yy = (np.arange(y_lo, y_hi) + 0.5) * sy - 0.5 - c.y0
    xx = (np.arange(x_lo, x_hi) + 0.5) * sx - 0.5 - c.x0
    grid = np.meshgrid(yy, xx, indexing="ij")
    values = ndimage.map_coordinates(c.prob, grid, order=1, mode="nearest")
    return y_lo, x_lo, values >= threshold


def paste_crops(crops: list[tuple[int, int, np.ndarray] | None], shape: tuple[int, int]
                ) -> np.ndarray:
    """(n, H, W) bool masks from :func:`frame_crops` (an empty mask for None): the one
    full-size allocation of a frame's result."""
    masks = np.zeros((len(crops), *shape), bool)
    for k, crop in enumerate(crops):
        if crop is not None:
            y0, x0, m = crop
            masks[k, y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return masks


def _to_frame(cands: list[_Candidate], work_shape: tuple[int, int], shape: tuple[int, int],
              threshold: float, one_piece: bool = False) -> np.ndarray:
    """(n, H, W) bool masks at the input size, one per candidate (empty ones included)."""
    return paste_crops(frame_crops(cands, work_shape, shape, threshold, one_piece), shape)
