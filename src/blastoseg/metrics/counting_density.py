"""Counting and localisation from a density map, and the metrics of Cell-Net's Tables 3-6 (S2).

* count = round(integral of the density map) (section III.A);
* centroids = the ``count`` highest local maxima of the map, at least ``radius`` px apart
  (non-maximum suppression), refined to sub-pixel by the density-weighted mean of the 3 x 3
  neighbourhood;
* stage accuracy (exact count per image), detection rate (true centroids matched one-to-one,
  Hungarian, within 10 px), misses (predicted centroids > 10 px from every true centroid),
  perfect localisations (matched within 3 px) and the mean Euclidean distance of the matched
  pairs. Distances are in the pixels of the points given (the caller chooses the frame).

Every value is a plain Python number; an undefined one (no points) is None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from blastoseg.metrics.coco_eval import MetricsError
from blastoseg.metrics.counting import centroid_metrics, count_metrics

__all__ = ["DETECTION_DIST_PX", "PERFECT_DIST_PX", "count_from_density", "density_peaks",
           "evaluate_density_counts", "localisation_metrics", "peak_radius"]

#: a true centroid is detected when a predicted one lies within this distance (Tables 3-6)
DETECTION_DIST_PX = 10.0
#: a detection closer than this is a perfect localisation
PERFECT_DIST_PX = 3.0


def _check_density(density: np.ndarray) -> np.ndarray:
    d = np.asarray(density, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise MetricsError(f"a density map must be a non-empty 2D array, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise MetricsError("the density map has NaN or infinite values")
    return d


def count_from_density(density: np.ndarray) -> tuple[int, float]:
    """``(count, integral)``: the integral of the map and its rounding (never below 0)."""
    integral = float(_check_density(density).sum())
    return max(int(round(integral)), 0), integral


def peak_radius(working_size: int) -> int:
    """The NMS radius for a working size: 1/32 of it (6 px at 192), at least 2 px; blastomere
    centres of an 8-cell embryo framed at the working size are about 1/8 of it apart."""
    return max(int(round(working_size / 32)), 2)


def density_peaks(density: np.ndarray, count: int, radius: int) -> np.ndarray:
    """The ``count`` strongest local maxima of ``density`` at least ``radius`` px apart, as an
    (N, 2) float (y, x) array (N <= count; fewer when the map has fewer maxima)."""
    d = _check_density(density)
    if count <= 0:
        return np.zeros((0, 2))
    size = 2 * int(radius) + 1
    is_max = (d == ndimage.maximum_filter(d, size=size, mode="constant", cval=-np.inf)) & (d > 0)
    ys, xs = np.nonzero(is_max)
    order = np.argsort(-d[ys, xs], kind="stable")
    picked: list[tuple[int, int]] = []
    for k in order:  # plateaus give several equal maxima: keep those radius apart
        y, x = int(ys[k]), int(xs[k])
        if all((y - py) ** 2 + (x - px) ** 2 > radius ** 2 for py, px in picked):
            picked.append((y, x))
            if len(picked) == count:
                break
    h, w = d.shape
    out = np.zeros((len(picked), 2))
    for i, (y, x) in enumerate(picked):
        y0, y1, x0, x1 = max(y - 1, 0), min(y + 2, h), max(x - 1, 0), min(x + 2, w)
        win = d[y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        total = win.sum()
        out[i] = (float((win * yy).sum() / total), float((win * xx).sum() / total)) \
            if total > 0 else (y, x)
    return out


def _points(p, what: str, i: int) -> np.ndarray:
    a = np.asarray(p, dtype=float)
    if a.size == 0:
        return a.reshape(0, 2)
    if a.ndim != 2 or a.shape[1] != 2:
        raise MetricsError(f"{what} frame {i}: points must be (N, 2) (y, x), got {a.shape}")
    return a[np.all(np.isfinite(a), axis=1)]


def localisation_metrics(gt: Sequence, pred: Sequence, *,
                         max_dist: float = DETECTION_DIST_PX,
                         perfect_dist: float = PERFECT_DIST_PX) -> dict:
    """Cell detection of Tables 3-6 over frames (lists of (N, 2) (y, x) points per frame).

    Returns ``detection_rate`` (matched true centroids / true centroids), ``misses``
    (predicted centroids farther than ``max_dist`` from every true centroid),
    ``miss_rate`` (misses / predicted), ``perfect`` (matched pairs closer than
    ``perfect_dist``), ``perfect_rate`` (/ true centroids), ``ed_px`` (mean distance of the
    matched pairs), ``n_gt``, ``n_pred``, ``tp``.
    """
    if len(gt) != len(pred):
        raise MetricsError(f"{len(gt)} ground-truth frames but {len(pred)} predicted frames")
    g_all = [_points(g, "ground-truth", i) for i, g in enumerate(gt)]
    p_all = [_points(p, "prediction", i) for i, p in enumerate(pred)]
    base = centroid_metrics(g_all, p_all, max_dist) if g_all else {
        "n_gt": 0, "n_pred": 0, "tp": 0, "mean_distance": None}
    misses = perfect = 0
    for g, p in zip(g_all, p_all, strict=True):
        if len(p) and not len(g):
            misses += len(p)
            continue
        if not len(p):
            continue
        d = np.linalg.norm(g[:, None, :] - p[None, :, :], axis=-1)
        misses += int((d.min(axis=0) > max_dist).sum())
        perfect += int(centroid_metrics([g], [p], perfect_dist)["tp"])
    n_gt, n_pred = int(base["n_gt"]), int(base["n_pred"])
    return {
        "n_gt": n_gt, "n_pred": n_pred, "tp": int(base["tp"]),
        "detection_rate": base["tp"] / n_gt if n_gt else None,
        "misses": misses, "miss_rate": misses / n_pred if n_pred else None,
        "perfect": perfect, "perfect_rate": perfect / n_gt if n_gt else None,
        "ed_px": base["mean_distance"],
    }


def evaluate_density_counts(gt_points: Sequence, pred_counts: Sequence[int],
                            pred_points: Sequence, **kw: float) -> dict:
    """Counts and localisation together: ``count_exact`` (stage accuracy), ``count_mae``,
    ``count_within1``, ``count_bias``, ``by_count``, ``n_images`` (from
    :func:`blastoseg.metrics.counting.count_metrics`, true count = number of true points) and
    the keys of :func:`localisation_metrics`."""
    gt_counts = [len(_points(g, "ground-truth", i)) for i, g in enumerate(gt_points)]
    out = count_metrics(gt_counts, list(pred_counts))
    out.update(localisation_metrics(gt_points, pred_points, **kw))
    return out
