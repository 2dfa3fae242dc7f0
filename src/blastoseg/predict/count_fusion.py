"""Counting with both models (issue 15, item 4): Cell-Net's density count and the amodal
detector's instances, fused.

The two fail differently: the density map rarely misses a cell but puts no outline on it;
the detector outlines cells but drops the ones it scores below its calibrated threshold
(mostly stacked, half-hidden cells). The rule, per frame:

1. ``counted`` = the detector's instances scoring >= ``count_threshold`` (its own count);
   ``candidates`` = the ones scoring in [``low_threshold``, ``count_threshold``).
2. The density map's peaks (``CountResult.centroids``) are matched one-to-one (Hungarian)
   to the counted instances' centroids within ``match_px`` (default: the counted cells' mean
   equivalent radius: a peak within one cell radius of a cell's centroid is that cell).
3. Density count > counted: every unmatched peak takes the best-scoring candidate whose
   centroid lies within ``match_px`` of it (each candidate once): low-scored instances are
   kept where the density map says there is a cell nobody counted.
4. Density count < counted: counted instances that no peak matched are dropped, lowest score
   first, while the total exceeds the density count (a duplicate or a fragment that the
   density map does not support).

The fused count is the number of instances kept, so every counted cell still has an outline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from blastoseg.instances import FrameInstances

__all__ = ["FusedCount", "fuse_counts"]

#: match radius when no instance is counted (px)
FALLBACK_MATCH_PX = 10.0


@dataclass
class FusedCount:
    """One frame's fused count: ``count`` (fused), ``density_count``, ``instance_count`` (the
    detector alone), ``instances`` (the kept ones, an outline per counted cell), ``added`` and
    ``dropped`` (indices into the detector's instances), ``density`` (the Cell-Net result
    fused: its map and peaks) and ``meta`` (the instances' framing and both model names)."""

    count: int
    density_count: int
    instance_count: int
    instances: FrameInstances
    added: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    density: object = None
    meta: dict = field(default_factory=dict)

    @property
    def centroids(self) -> np.ndarray:
        """(count, 2) (y, x) centroids of the counted cells."""
        return self.instances.centroids


def _match(peaks: np.ndarray, points: np.ndarray, max_px: float) -> dict[int, int]:
    """Peak index -> point index, one-to-one within ``max_px`` (Hungarian)."""
    if not len(peaks) or not len(points):
        return {}
    d = np.linalg.norm(peaks[:, None, :] - points[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(np.where(d <= max_px, d, 1e6))
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if d[r, c] <= max_px}


def fuse_counts(density, instances: FrameInstances, *, count_threshold: float,
                low_threshold: float = 0.05, match_px: float | None = None) -> FusedCount:
    """Fuse a :class:`~blastoseg.predict.count.CountResult` with the detector's instances of the
    same frame (run at a score threshold <= ``low_threshold``); see the module docstring."""
    if not 0.0 <= low_threshold <= count_threshold <= 1.0:
        raise ValueError(f"need 0 <= low_threshold <= count_threshold <= 1, got "
                         f"{low_threshold} and {count_threshold}")
    if tuple(density.density.shape) != tuple(instances.shape):
        raise ValueError(f"the density map ({density.density.shape}) and the instances "
                         f"({instances.shape}) are of different frames")
    scores = np.asarray(instances.scores, float)
    cents = instances.centroids
    valid = np.all(np.isfinite(cents), axis=1)
    counted = np.flatnonzero((scores >= count_threshold) & valid)
    candidates = np.flatnonzero((scores >= low_threshold) & (scores < count_threshold) & valid)
    if match_px is None:
        areas = instances.masks[counted].reshape(len(counted), -1).sum(axis=1) \
            if len(counted) else np.zeros(0)
        match_px = float(np.sqrt(areas.mean() / np.pi)) if len(areas) else FALLBACK_MATCH_PX
    peaks = np.asarray(density.centroids, float).reshape(-1, 2)
    keep = list(counted)
    added: list[int] = []
    dropped: list[int] = []
    matched = _match(peaks, cents[counted], match_px)
    if density.count > len(counted):
        free = [p for p in range(len(peaks)) if p not in matched]
        taken: set[int] = set()
        for p in free:
            if len(keep) >= density.count:
                break
            near = [c for c in candidates if c not in taken
                    and np.linalg.norm(cents[c] - peaks[p]) <= match_px]
            if near:
                best = max(near, key=lambda c: scores[c])
                taken.add(best)
                keep.append(int(best))
                added.append(int(best))
    elif density.count < len(counted):
        supported = {int(counted[i]) for i in matched.values()}
        for c in sorted((c for c in counted if int(c) not in supported), key=lambda c: scores[c]):
            if len(keep) <= density.count:
                break
            keep.remove(c)
            dropped.append(int(c))
    mask = np.zeros(len(instances), bool)
    mask[keep] = True
    meta = {**instances.meta, "density_model": density.meta.get("model")}
    return FusedCount(count=len(keep), density_count=int(density.count),
                      instance_count=int(len(counted)), instances=instances.select(mask),
                      added=added, dropped=dropped, density=density, meta=meta)
