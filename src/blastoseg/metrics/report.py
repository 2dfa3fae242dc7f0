"""One evaluation of amodal instance predictions: COCO mask AP (amodal and visible), counting,
broken down by true cell count; and a plain-text table of it.

:func:`evaluate_amodal` returns only JSON-serialisable values (Python ints, floats, bools,
strings, ``None`` for undefined; no NumPy types, no NaN), so ``blastoseg eval amodal --json``
prints ``json.dumps(result)``. The ``by_count`` and ``mAP_by_count`` dictionaries have int
keys in Python; JSON turns them into strings, and :func:`format_report` accepts either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.metrics.coco_eval import (
    AP_KEYS,
    MetricsError,
    _categories_for,
    _coco_stats,
    _encode_pair,
)
from blastoseg.metrics.counting import count_metrics

__all__ = ["evaluate_amodal", "format_report"]

_COUNT_KEYS = ("count_exact", "count_mae", "count_within1", "count_bias")


def _has_visible(frames: Sequence[FrameInstances]) -> bool:
    """Every frame with instances carries visible masks (and at least one has instances)."""
    with_instances = [f for f in frames if len(f)]
    return bool(with_instances) and all(f.visible_masks is not None for f in with_instances)


def evaluate_amodal(
    gt: Sequence[FrameInstances],
    pred: Sequence[FrameInstances],
    *,
    score_threshold: float = 0.5,
    categories: dict[int, str] | None = None,
) -> dict:
    """Evaluate predicted instances against ground truth, frame by frame.

    Parameters
    ----------
    gt, pred
        Ground truth and predictions, same length and frame order (an empty prediction is
        ``FrameInstances.empty(shape)``).
    score_threshold
        Counting uses the predictions with ``score >= score_threshold``. Mask AP uses every
        prediction, ranked by score (COCO practice), so it does not depend on this value.
    categories
        Category id -> name for mask AP; default every class id used.

    Returns
    -------
    dict
        ``n_images``, ``n_gt_instances``, ``n_pred_instances``, ``score_threshold``;
        amodal mask AP ``mAP``, ``AP50``, ``AP75``, ``AP_S``, ``AP_M``, ``AP_L``, ``AR``;
        ``visible_evaluated`` and, when True, the same AP keys prefixed ``visible_`` (else
        ``visible_skipped`` says why); ``count_exact``, ``count_mae``, ``count_within1``,
        ``count_bias``; ``by_count`` {true count: {n_images, exact, mae, bias}};
        ``mAP_by_count`` {true count: {n_images, n_gt, mAP, AP50, AP75}}. See docs/metrics.md.
    """
    gt, pred = list(gt), list(pred)
    if not (isinstance(score_threshold, (int, float)) and np.isfinite(score_threshold)):
        raise MetricsError(f"score_threshold must be a number, got {score_threshold!r}")
    gt_rec, pred_rec = _encode_pair(gt, pred, use_visible=False)
    cats = _categories_for(gt_rec, pred_rec, categories)
    shapes = [f.shape for f in gt]

    result: dict = {
        "n_images": len(gt),
        "n_gt_instances": int(sum(len(f) for f in gt)),
        "n_pred_instances": int(sum(len(f) for f in pred)),
        "score_threshold": float(score_threshold),
    }
    amodal = _coco_stats(gt_rec, pred_rec, shapes, cats)
    result.update({k: amodal[k] for k in AP_KEYS})

    if not _has_visible(gt):
        result["visible_evaluated"] = False
        result["visible_skipped"] = "ground truth has no visible masks"
    elif not all(f.visible_masks is not None for f in pred if len(f)):
        result["visible_evaluated"] = False
        result["visible_skipped"] = "predictions have no visible masks"
    else:
        vis_gt, vis_pred = _encode_pair(gt, pred, use_visible=True)
        visible = _coco_stats(vis_gt, vis_pred, shapes, cats)
        result["visible_evaluated"] = True
        result.update({f"visible_{k}": visible[k] for k in AP_KEYS})

    gt_counts = [len(f) for f in gt]
    pred_counts = [int(np.count_nonzero(f.scores >= score_threshold)) for f in pred]
    counting = count_metrics(gt_counts, pred_counts)
    result.update({k: counting[k] for k in _COUNT_KEYS})
    result["by_count"] = counting["by_count"]

    by_count_map: dict[int, dict] = {}
    for n in sorted(set(gt_counts)):
        idx = [i for i, c in enumerate(gt_counts) if c == n]
        stats = _coco_stats([gt_rec[i] for i in idx], [pred_rec[i] for i in idx],
                            [shapes[i] for i in idx], cats)
        by_count_map[n] = {"n_images": len(idx), "n_gt": stats["n_gt"], "mAP": stats["mAP"],
                           "AP50": stats["AP50"], "AP75": stats["AP75"]}
    result["mAP_by_count"] = by_count_map
    return result


# --- text table ------------------------------------------------------------------------------

def _num(v, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _int_keyed(d: Mapping | None) -> dict[int, dict]:
    return {int(k): v for k, v in (d or {}).items()}  # JSON round trips make keys strings


def format_report(result: Mapping) -> str:
    """A readable multi-line table of an :func:`evaluate_amodal` result ("-" = undefined)."""
    lines = [f"images: {result.get('n_images', 0)}   true cells: "
             f"{result.get('n_gt_instances', '-')}   predictions: "
             f"{result.get('n_pred_instances', '-')}", ""]
    visible = bool(result.get("visible_evaluated"))
    lines.append(f"{'mask AP':<10}{'amodal':>9}" + (f"{'visible':>9}" if visible else ""))
    for key in AP_KEYS:
        row = f"  {key:<8}{_num(result.get(key)):>9}"
        if visible:
            row += f"{_num(result.get('visible_' + key)):>9}"
        lines.append(row)
    if not visible and result.get("visible_skipped"):
        lines.append(f"  (visible masks not evaluated: {result['visible_skipped']})")
    lines += ["", f"counting (predictions with score >= {result.get('score_threshold', 0.5):g})",
              f"  {'exact':<10}{_pct(result.get('count_exact')):>9}",
              f"  {'within 1':<10}{_pct(result.get('count_within1')):>9}",
              f"  {'MAE':<10}{_num(result.get('count_mae'), '{:.3f}'):>9}",
              f"  {'bias':<10}{_num(result.get('count_bias'), '{:+.3f}'):>9}"]
    by_count = _int_keyed(result.get("by_count"))
    ap_by_count = _int_keyed(result.get("mAP_by_count"))
    if by_count or ap_by_count:
        lines += ["", "by true cell count",
                  f"  {'cells':>5}{'images':>8}{'exact':>9}{'MAE':>8}{'mAP':>8}{'AP50':>8}"
                  f"{'AP75':>8}"]
        for n in sorted(set(by_count) | set(ap_by_count)):
            c, a = by_count.get(n, {}), ap_by_count.get(n, {})
            n_img = c.get("n_images", a.get("n_images", 0))
            lines.append(f"  {n:>5}{n_img:>8}{_pct(c.get('exact')):>9}"
                         f"{_num(c.get('mae'), '{:.2f}'):>8}{_num(a.get('mAP')):>8}"
                         f"{_num(a.get('AP50')):>8}{_num(a.get('AP75')):>8}")
    return "\n".join(lines)
