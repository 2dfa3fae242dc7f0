"""Test-time flips for an instance detector: the amodal model's detections on flipped copies
of a crop, flipped back and merged into one list.

Four copies are the crop and its three mirror images (left-right, top-bottom, both); eight
add each of those mirrored across the diagonal (transposed), which gives all eight symmetries
of a square (the four rotations and four reflections). The model saw all of them as
augmentation in training and errs differently on each.

A dense map can simply be averaged over flips (:mod:`blastoseg.predict.test_time_flips`);
instances cannot, since each copy finds its own list. The merge is the usual one for
detection ensembles (e.g. weighted boxes fusion, Solovyev et al. 2021, section 2, applied to
masks): pool every copy's detections, group them greedily best score first (a group takes at
most one detection from each copy, the one whose mask overlaps the group's seed most, above
``match_iou``), and give each group

- the **sum of its scores divided by the number of copies**: a cell found in every copy keeps
  its score, one found in a single copy keeps a quarter (an eighth) of it (WBF's score
  rescaling), so
  chance detections sink below the cell threshold and a cell found in most copies stays;
- the **mean of its members' mask probabilities** and boxes (the outline where the copies
  agree);

and the dense maps (occlusion, layers) are averaged over the copies. The merged output has
the detector's own keys, so thresholds, mask NMS, the layer rule and calibration run on it
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from blastoseg.predict.mask_nms import mask_overlaps
from blastoseg.predict.test_time_flips import FOUR_FLIPS

__all__ = ["MATCH_IOU", "VIEWS", "View", "check_flips", "flip_back", "flipped", "merge_flipped"]

#: one copy of the crop: (the dims it is flipped along, whether it is then transposed)
View = tuple[tuple[int, ...], bool]
#: the copies for each number of flips a user may ask for
VIEWS: dict[int, tuple[View, ...]] = {
    4: tuple((dims, False) for dims in FOUR_FLIPS),
    8: tuple((dims, t) for t in (False, True) for dims in FOUR_FLIPS),
}

#: two copies' detections are one cell when their masks overlap at least this much (IoU)
MATCH_IOU = 0.5
# detections below this score take no part in the merge: each could add at most a quarter
# (an eighth) of it to a group, and the pairwise mask overlaps cost O(N^2) pixels
_MIN_SCORE = 0.02


def check_flips(flips: bool | int | None) -> int:
    """The number of copies a ``flips`` option asks for: 0 (off: False, None, 0 or 1), 4
    (True or 4) or 8; anything else is a ValueError."""
    n = 0 if flips is None or flips is False else 4 if flips is True else flips
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) not in (0, 1, 4, 8):
        raise ValueError(f"flips must be off, 4 or 8 copies; got {flips!r}")
    return 0 if int(n) <= 1 else int(n)


def flipped(x: torch.Tensor, view: View) -> torch.Tensor:
    """The copy ``view`` of an image (..., H, W): flipped, then transposed if it says so."""
    dims, transposed = view
    x = torch.flip(x, dims) if dims else x
    return x.transpose(-1, -2).contiguous() if transposed else x


def flip_back(out: dict[str, torch.Tensor], view: View) -> dict[str, torch.Tensor]:
    """A detector output on the copy ``view`` of a crop (:func:`flipped`) mapped back onto
    the crop: masks (N, 1, H, W), occlusion / layers (1, H, W) and boxes (N, 4: x1, y1, x2,
    y2) transposed back, then flipped back; everything else as it is."""
    dims, transposed = view
    if not dims and not transposed:
        return out
    back = dict(out)
    for key in ("masks", "occlusion", "layers"):
        if key in back:
            m = back[key].transpose(-1, -2) if transposed else back[key]
            back[key] = torch.flip(m, dims) if dims else m
    if "boxes" in back:
        b = back["boxes"][:, [1, 0, 3, 2]] if transposed else back["boxes"].clone()
        if dims and "masks" in back:
            h, w = back["masks"].shape[-2:]
            if -1 in dims:
                b[:, [0, 2]] = w - b[:, [2, 0]]
            if -2 in dims:
                b[:, [1, 3]] = h - b[:, [3, 1]]
        back["boxes"] = b
    return back


def merge_flipped(outputs: Sequence[dict[str, torch.Tensor]], match_iou: float = MATCH_IOU
                  ) -> dict[str, torch.Tensor]:
    """One crop's detections from several flipped copies (each already :func:`flip_back`-ed)
    merged into one output (see the module notes). Scores in descending order."""
    n_views = len(outputs)
    if n_views == 0:
        raise ValueError("merge_flipped needs at least one output")
    merged: dict[str, torch.Tensor] = {}
    for key in ("occlusion", "layers"):
        if all(key in o for o in outputs):
            merged[key] = torch.stack([o[key].float() for o in outputs]).mean(0)
    first = outputs[0]
    keep = [o["scores"].float() >= _MIN_SCORE for o in outputs]
    scores = torch.cat([o["scores"].float()[k] for o, k in zip(outputs, keep, strict=True)])
    masks = torch.cat([o["masks"].float()[k] for o, k in zip(outputs, keep, strict=True)])
    boxes = torch.cat([o["boxes"].float()[k] for o, k in zip(outputs, keep, strict=True)])
    view = np.concatenate([np.full(int(k.sum()), v) for v, k in enumerate(keep)])
    groups = _group(mask_overlaps(masks[:, 0])[0], scores.cpu().numpy(), view, n_views,
                    match_iou)
    order = sorted(range(len(groups)), key=lambda g: -float(scores[groups[g]].sum()))
    groups = [groups[g] for g in order]
    dev = first["scores"].device
    merged["scores"] = torch.tensor([float(scores[g].sum()) / n_views for g in groups],
                                    dtype=torch.float32, device=dev)
    shape = tuple(first["masks"].shape[1:])
    merged["masks"] = (torch.stack([masks[g].mean(0) for g in groups]) if groups
                       else torch.zeros((0, *shape), device=dev))
    merged["boxes"] = (torch.stack([boxes[g].mean(0) for g in groups]) if groups
                       else torch.zeros((0, 4), device=dev))
    if "labels" in first:
        merged["labels"] = torch.ones(len(groups), dtype=torch.int64, device=dev)
    return merged


def _group(iou: np.ndarray, scores: np.ndarray, view: np.ndarray, n_views: int,
           match_iou: float) -> list[list[int]]:
    """Greedy groups, best score first: a seed takes, from each other copy, the unused
    detection whose mask overlaps it most (IoU >= ``match_iou``)."""
    used = np.zeros(len(scores), bool)
    groups = []
    for i in np.argsort(-scores, kind="stable").tolist():
        if used[i]:
            continue
        used[i] = True
        group = [i]
        for v in range(n_views):
            if v == view[i]:
                continue
            cand = np.flatnonzero((view == v) & ~used & (iou[i] >= match_iou))
            if len(cand):
                j = int(cand[np.argmax(iou[i, cand])])
                used[j] = True
                group.append(j)
        groups.append(group)
    return groups
