"""COCO mask AP of amodal (or visible) instance masks, through pycocotools' ``COCOeval``.

Masks are encoded with pycocotools (``mask.encode``); two in-memory COCO objects are built
(ground truth, and predictions loaded with ``COCO.loadRes``); ``COCOeval(iouType="segm")``
does the matching and the averaging. Nothing here re-implements RLE, IoU or AP.

Undefined values
----------------
pycocotools reports ``-1`` for a metric it cannot compute (no ground-truth instance in that
area range, or no ground truth at all). We return ``None`` instead, so a result never holds
NaN or a misleading ``-1`` and is JSON-serialisable as is. ``n_gt`` and ``n_pred`` say how
many instances were evaluated; ``n_gt == 0`` is the flag for "nothing to evaluate".
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances

__all__ = ["AP_KEYS", "MAX_DETS", "MetricsError", "evaluate_masks"]

#: COCO's detection limits, kept so numbers compare with published COCO mask AP. An embryo has
#: at most ~16 cells, so the 100 limit never truncates a sensible prediction.
MAX_DETS: tuple[int, int, int] = (1, 10, 100)

#: Keys of :func:`evaluate_masks`'s AP/AR values, in COCOeval.summarize() order (AR = AR@100).
AP_KEYS: tuple[str, ...] = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR")
_STATS_INDEX = {"mAP": 0, "AP50": 1, "AP75": 2, "AP_S": 3, "AP_M": 4, "AP_L": 5, "AR": 8}


class MetricsError(BlastosegError):
    """Ground truth and predictions cannot be evaluated together (lengths, shapes, missing
    visible masks, unknown categories)."""


@dataclass
class _Record:
    """One encoded instance: COCO RLE (counts as bytes), category, score."""

    rle: dict
    category_id: int
    score: float


def _encode_frame(frame: FrameInstances, use_visible: bool, what: str, index: int
                  ) -> list[_Record]:
    if len(frame) == 0:
        return []
    masks = frame.masks
    if use_visible:
        if frame.visible_masks is None:
            raise MetricsError(
                f"{what} frame {index} has {len(frame)} instances but no visible masks; "
                f"visible-mask evaluation needs visible_masks on every {what} frame "
                f"(evaluate amodal masks with use_visible=False instead)")
        masks = frame.visible_masks
    # pycocotools walks pixels in Fortran order: (H, W, N) uint8, column-major
    arr = np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1))
    rles = mask_utils.encode(arr)
    return [_Record(rle, int(c), float(s))
            for rle, c, s in zip(rles, frame.class_ids, frame.scores, strict=True)]


def _check_pair(gt: Sequence[FrameInstances], pred: Sequence[FrameInstances]) -> None:
    if len(gt) != len(pred):
        raise MetricsError(f"ground truth has {len(gt)} frames but predictions have "
                           f"{len(pred)}; give one prediction (possibly empty) per frame")
    for i, (g, p) in enumerate(zip(gt, pred, strict=True)):
        for what, f in (("ground-truth", g), ("prediction", p)):
            if not isinstance(f, FrameInstances):
                raise MetricsError(f"{what} frame {i} is a {type(f).__name__}, "
                                   f"expected FrameInstances")
        if g.shape != p.shape:
            raise MetricsError(f"frame {i}: ground truth is {g.shape} but the prediction "
                               f"is {p.shape}; predictions must be in the frame's pixels")


def _categories_for(gt_records: list[list[_Record]], pred_records: list[list[_Record]],
                    categories: dict[int, str] | None) -> dict[int, str]:
    used_gt = {r.category_id for frame in gt_records for r in frame}
    if categories is None:
        used = used_gt | {r.category_id for frame in pred_records for r in frame}
        return {c: ("blastomere" if c == 1 else f"category_{c}") for c in sorted(used or {1})}
    unknown = sorted(used_gt - set(categories))
    if unknown:
        raise MetricsError(f"ground-truth class ids {unknown} are not in categories "
                           f"{dict(categories)}")
    return {int(k): str(v) for k, v in categories.items()}


def _quiet():
    """Silence pycocotools' prints and its numpy-2 deprecation warnings."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", DeprecationWarning)
    return stack


def _encode_pair(gt: Sequence[FrameInstances], pred: Sequence[FrameInstances],
                 use_visible: bool) -> tuple[list[list[_Record]], list[list[_Record]]]:
    """Check a ground-truth/prediction pair and encode every mask once."""
    _check_pair(gt, pred)
    gt_records = [_encode_frame(f, use_visible, "ground-truth", i) for i, f in enumerate(gt)]
    pred_records = [_encode_frame(f, use_visible, "prediction", i) for i, f in enumerate(pred)]
    return gt_records, pred_records


def _coco_stats(gt_records: list[list[_Record]], pred_records: list[list[_Record]],
                shapes: list[tuple[int, int]], categories: dict[int, str]
                ) -> dict[str, float | int | None]:
    """Run COCOeval(segm) on encoded frames; image ids are 1..n in frame order."""
    images, gt_anns, dt_anns = [], [], []
    for img_id, (g, p, (h, w)) in enumerate(zip(gt_records, pred_records, shapes, strict=True),
                                            start=1):
        images.append({"id": img_id, "height": int(h), "width": int(w)})
        for r in g:
            gt_anns.append({
                "id": len(gt_anns) + 1,  # COCOeval treats id 0 as "unmatched": start at 1
                "image_id": img_id, "category_id": r.category_id, "segmentation": r.rle,
                "area": float(mask_utils.area(r.rle)), "bbox": mask_utils.toBbox(r.rle).tolist(),
                "iscrowd": 0,
            })
        for r in p:
            # no "bbox": loadRes then takes area (and the box) from the mask, as segm AP needs
            dt_anns.append({"image_id": img_id, "category_id": r.category_id,
                            "segmentation": r.rle, "score": r.score})
    cats = [{"id": c, "name": n} for c, n in categories.items()]
    result: dict[str, float | int | None] = {"n_gt": len(gt_anns), "n_pred": len(dt_anns)}
    if not gt_anns:
        result.update(dict.fromkeys(AP_KEYS))
        return result
    with _quiet():
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": cats}
        coco_gt.createIndex()
        if dt_anns:
            coco_dt = coco_gt.loadRes(dt_anns)
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(images), "annotations": [], "categories": cats}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.maxDets = list(MAX_DETS)
        ev.params.catIds = sorted(categories)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for key, idx in _STATS_INDEX.items():
        v = float(ev.stats[idx])
        result[key] = None if v < 0 or not np.isfinite(v) else v
    return result


def evaluate_masks(
    gt: Sequence[FrameInstances],
    pred: Sequence[FrameInstances],
    *,
    use_visible: bool = False,
    categories: dict[int, str] | None = None,
) -> dict[str, float | int | None]:
    """COCO mask AP of predicted instances against ground truth, one entry per frame.

    Parameters
    ----------
    gt, pred
        Ground truth and predictions, same length and frame order; a frame with no
        instances is fine on either side. All predictions are used (ranked by score, at most
        100 per frame); do not threshold them first, or the precision-recall curve is cut.
    use_visible
        Evaluate ``visible_masks`` (ground truth vs prediction) instead of the amodal
        ``masks``. Every frame with instances must then carry visible masks.
    categories
        Category id -> name to evaluate. Default: every class id used (id 1 = blastomere).
        AP is averaged over categories that have ground truth.

    Returns
    -------
    dict
        ``mAP`` (AP at IoU .50:.05:.95), ``AP50``, ``AP75``, ``AP_S``/``AP_M``/``AP_L`` (by
        ground-truth mask area < 32^2, < 96^2, larger), ``AR`` (recall at 100 detections),
        all plain floats in [0, 1] or ``None`` where undefined (pycocotools' -1: no ground
        truth in that range); ``n_gt`` and ``n_pred`` instance counts (ints).

    Raises
    ------
    MetricsError
        Different numbers of frames, a frame whose shapes differ, visible masks missing with
        ``use_visible=True``, or ground-truth class ids outside ``categories``.
    """
    gt, pred = list(gt), list(pred)
    gt_records, pred_records = _encode_pair(gt, pred, use_visible)
    cats = _categories_for(gt_records, pred_records, categories)
    return _coco_stats(gt_records, pred_records, [f.shape for f in gt], cats)
