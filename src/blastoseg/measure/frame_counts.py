"""One frame's count from whatever model counted it: a count model's density result or an
amodal model's instances -> (count estimate, centroids, density map).

Duck-typed, so this module imports neither torch nor the predictors:

- a **count** result (:class:`blastoseg.predict.count.CountResult`: ``integral``,
  ``centroids``, ``density``): the estimate is the density map's integral (the expected
  count, a float; better evidence for the timeline than its rounding);
- **amodal** instances (:class:`blastoseg.instances.FrameInstances`: ``scores``,
  ``centroids``): the estimate is the number of instances scoring at least the predictor's
  calibrated count threshold (``calibrated_threshold``), their centroids the centroids;
- a **fused** count (:class:`blastoseg.predict.count_fusion.FusedCount`: ``count``,
  ``density_count``, ``instances``): the estimate is the fused count, the centroids those of
  the instances kept, the density map Cell-Net's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blastoseg.errors import BlastosegError

__all__ = ["COUNT_KINDS", "COUNTER_KINDS", "FrameCount", "count_threshold_of", "frame_count",
           "iter_frame_counts"]

#: the model kinds whose results can be counted, preferred first when no model is named
COUNT_KINDS = ("count", "amodal")
#: what a counter may be: one of those models, or both fused ("fused")
COUNTER_KINDS = (*COUNT_KINDS, "fused")


@dataclass
class FrameCount:
    """What the timeline needs of one frame.

    Attributes
    ----------
    estimate
        Count estimate (float: a density integral need not be whole).
    centroids
        (N, 2) float (y, x) of the cells found.
    density
        (H, W) density map of a count model, None for instances.
    """

    estimate: float
    centroids: np.ndarray
    density: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(round(self.estimate))


def count_threshold_of(predictor) -> float | None:
    """The score at which an amodal predictor's instance counts as a cell (None: not an
    instance model, or one without a calibrated threshold)."""
    value = getattr(predictor, "calibrated_threshold", None)
    return None if value is None else float(value)


def frame_count(result, threshold: float | None = None) -> FrameCount:
    """A :class:`FrameCount` from a count result or from frame instances (``threshold``: the
    instance score that counts; None counts every instance)."""
    if hasattr(result, "density_count") and hasattr(result, "instances"):
        cents = np.asarray(result.instances.centroids, dtype=float).reshape(-1, 2)
        dens = getattr(result.density, "density", None)
        return FrameCount(float(result.count), cents[np.all(np.isfinite(cents), axis=1)],
                          None if dens is None else np.asarray(dens, dtype=np.float32))
    if hasattr(result, "integral") and hasattr(result, "density"):
        cents = np.asarray(result.centroids, dtype=float).reshape(-1, 2)
        return FrameCount(float(result.integral), cents,
                          np.asarray(result.density, dtype=np.float32))
    if hasattr(result, "masks") and hasattr(result, "centroids"):
        n = len(result.masks)
        scores = getattr(result, "scores", None)
        keep = (np.ones(n, dtype=bool) if scores is None or threshold is None
                else np.asarray(scores, dtype=float) >= float(threshold))
        cents = np.asarray(result.centroids, dtype=float).reshape(-1, 2)[keep]
        return FrameCount(float(keep.sum()), cents[np.all(np.isfinite(cents), axis=1)])
    raise BlastosegError(f"cannot count cells from a {type(result).__name__}: the timeline "
                         "takes 'count', 'amodal' or fused results")


def iter_frame_counts(predictor, frames: Sequence,
                      on_count: Callable[[int, FrameCount], None] | None = None,
                      **framing: Any) -> Generator[tuple[int, int], None, list[FrameCount]]:
    """Run ``predictor`` over ``frames`` and turn each result into a :class:`FrameCount` as
    soon as it is ready (the full result is not kept: a 500-frame time-lapse of instance
    masks would not fit in memory). Yields the predictor's ``(done, total)``; returns the
    counts in frame order (also given to ``on_count(index, count)`` when set). ``framing``
    goes to the predictor (e.g. ``steady=9`` for a time-lapse, ``diameter_px=``)."""
    threshold = count_threshold_of(predictor)
    counts: dict[int, FrameCount] = {}

    def keep(index: int, result) -> None:
        counts[index] = fc = frame_count(result, threshold)
        if on_count is not None:
            on_count(index, fc)

    work = predictor.iter_predict(frames, on_result=keep, **framing)
    yield from work
    return [counts[i] for i in sorted(counts)]
