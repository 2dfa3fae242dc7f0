"""Counting and centroid-detection metrics (cell count per frame, cell positions).

Every function returns plain Python numbers (JSON-serialisable); a value that is undefined
(no frames, no points) is ``None``, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from blastoseg.instances import FrameInstances
from blastoseg.metrics.coco_eval import MetricsError

__all__ = ["centroid_metrics", "count_metrics"]


def _as_counts(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise MetricsError(f"{what} counts must be a flat list of integers, got shape "
                           f"{arr.shape}")
    if arr.size and (not np.all(np.isfinite(arr.astype(float))) or np.any(arr < 0)
                     or np.any(arr != np.round(arr))):
        raise MetricsError(f"{what} counts must be non-negative integers, got {arr.tolist()}")
    return arr.astype(np.int64)


def count_metrics(gt_counts: Sequence[int], pred_counts: Sequence[int]) -> dict:
    """Agreement of predicted and true cell counts, one pair per frame.

    Parameters
    ----------
    gt_counts, pred_counts
        True and predicted number of cells of each frame, same length.

    Returns
    -------
    dict
        ``n_images``; ``count_exact`` (fraction of frames with the exact count),
        ``count_mae`` (mean |pred - true|), ``count_within1`` (fraction off by at most one),
        ``count_bias`` (mean pred - true: > 0 over-counts); ``by_count``: for every true count
        ``n`` (int key, sorted), ``{"n_images", "exact", "mae", "bias"}``. With no frames
        the fractions and errors are ``None``.
    """
    gt = _as_counts(gt_counts, "ground-truth")
    pred = _as_counts(pred_counts, "predicted")
    if len(gt) != len(pred):
        raise MetricsError(f"{len(gt)} ground-truth counts but {len(pred)} predicted counts; "
                           f"give one count per frame on both sides")
    err = pred - gt

    def summary(e: np.ndarray) -> tuple[float | None, float | None, float | None,
                                        float | None]:
        if not len(e):
            return None, None, None, None
        return (float(np.mean(e == 0)), float(np.mean(np.abs(e))),
                float(np.mean(np.abs(e) <= 1)), float(np.mean(e)))

    exact, mae, within1, bias = summary(err)
    by_count = {}
    for n in np.unique(gt):
        e = err[gt == n]
        ex, ma, _, bi = summary(e)
        by_count[int(n)] = {"n_images": int(len(e)), "exact": ex, "mae": ma, "bias": bi}
    return {"n_images": int(len(gt)), "count_exact": exact, "count_mae": mae,
            "count_within1": within1, "count_bias": bias, "by_count": by_count}


def _as_points(item, what: str, index: int) -> np.ndarray:
    if isinstance(item, FrameInstances):
        pts = item.centroids
    else:
        pts = np.asarray(item, dtype=float)
        if pts.size == 0:
            pts = pts.reshape(0, 2)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise MetricsError(f"{what} frame {index}: points must be (N, 2) (y, x), got "
                               f"shape {pts.shape}")
    return pts[np.all(np.isfinite(pts), axis=1)]  # empty masks have NaN centroids


def centroid_metrics(gt, pred, max_dist: float) -> dict:
    """Detection of cells by their centres: one-to-one matching within ``max_dist`` pixels.

    In every frame, true and predicted points are paired by the Hungarian algorithm (scipy
    ``linear_sum_assignment``) on their Euclidean distances; pairs farther apart than
    ``max_dist`` are not allowed, and the matching maximises the number of allowed pairs,
    then minimises their total distance. Matched pairs are true positives, unmatched
    predictions false positives, unmatched true points false negatives; totals are summed
    over frames.

    Parameters
    ----------
    gt, pred
        One frame: an (N, 2) array of (y, x) points or a :class:`FrameInstances` (its mask
        centroids). Several frames: a list of those, same length on both sides.
    max_dist
        Largest distance in pixels at which a prediction still counts as the true point.

    Returns
    -------
    dict
        ``n_gt``, ``n_pred``, ``tp``, ``fp``, ``fn`` (ints); ``precision`` (tp / n_pred),
        ``recall`` (tp / n_gt), ``f1`` (2 tp / (n_gt + n_pred)), ``mean_distance`` (pixels,
        over matched pairs); each ``None`` when its denominator is 0.
    """
    if not (np.isfinite(max_dist) and max_dist > 0):
        raise MetricsError(f"max_dist must be a positive number of pixels, got {max_dist!r}")

    def frames(x) -> list:
        if isinstance(x, FrameInstances) or (isinstance(x, np.ndarray) and x.ndim == 2):
            return [x]
        return list(x)

    gt_frames, pred_frames = frames(gt), frames(pred)
    if len(gt_frames) != len(pred_frames):
        raise MetricsError(f"{len(gt_frames)} ground-truth frames but {len(pred_frames)} "
                           f"predicted frames")
    tp = n_gt = n_pred = 0
    dist_sum = 0.0
    for i, (g, p) in enumerate(zip(gt_frames, pred_frames, strict=True)):
        g, p = _as_points(g, "ground-truth", i), _as_points(p, "prediction", i)
        n_gt += len(g)
        n_pred += len(p)
        if not len(g) or not len(p):
            continue
        d = np.linalg.norm(g[:, None, :] - p[None, :, :], axis=-1)
        allowed = d <= max_dist
        # a forbidden pair costs more than any set of allowed pairs: the assignment first
        # maximises the number of allowed pairs, then minimises their total distance
        big = 1.0 + float(d[allowed].sum()) if allowed.any() else 1.0
        rows, cols = linear_sum_assignment(np.where(allowed, d, big))
        ok = allowed[rows, cols]
        tp += int(ok.sum())
        dist_sum += float(d[rows, cols][ok].sum())
    fp, fn = n_pred - tp, n_gt - tp
    return {
        "n_gt": n_gt, "n_pred": n_pred, "tp": tp, "fp": fp, "fn": fn,
        "precision": tp / n_pred if n_pred else None,
        "recall": tp / n_gt if n_gt else None,
        "f1": 2 * tp / (n_gt + n_pred) if (n_gt + n_pred) else None,
        "mean_distance": dist_sum / tp if tp else None,
    }
