"""``blastoseg eval count``: a Cell-Net model's counts and centroids against a dataset.

The truth of each image is its amodal masks: the true count is the number of non-empty masks
and the true centres are the masks' centroids (input pixels). The predictor runs on the raw
images with its own framing (localisation), as a user would run it; distances are in the
dataset's pixels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from blastoseg.errors import DatasetFormatError
from blastoseg.io.dataset import read_dataset
from blastoseg.metrics.counting_density import evaluate_density_counts
from blastoseg.predict.base import load_predictor

__all__ = ["evaluate_count_model"]


def evaluate_count_model(model: str | None, data: str | os.PathLike, *, device: str = "auto",
                         max_images: int | None = None,
                         progress: Callable[[int, int], None] | None = None) -> dict:
    """Metrics of ``model`` on the dataset folder ``data``: ``count_exact``, ``count_mae``,
    ``count_within1``, ``count_bias``, ``by_count``, ``detection_rate``, ``misses``,
    ``perfect_rate``, ``ed_px``, ``n_images``, ``ms_per_frame``, ``model``, ``data``."""
    ds = read_dataset(data)
    n = len(ds) if max_images is None else min(len(ds), max(int(max_images), 0))
    if n == 0:
        raise DatasetFormatError(f"{data}: no images to evaluate")
    predictor = load_predictor(model, device, kind="count")
    gt, counts, points = [], [], []
    t0 = time.perf_counter()
    for k in range(n):
        centroids = ds.instances(k).centroids
        gt.append(centroids[np.all(np.isfinite(centroids), axis=1)])
        result = predictor.predict(ds.load_image(k))
        counts.append(result.count)
        points.append(result.centroids)
        if progress is not None:
            progress(k + 1, n)
    elapsed = time.perf_counter() - t0
    out = evaluate_density_counts(gt, counts, points)
    out["by_count"] = {str(c): v for c, v in out["by_count"].items()}
    out.update({"model": predictor.entry.name, "data": str(data),
                "ms_per_frame": round(1000 * elapsed / n, 1)})
    return out
