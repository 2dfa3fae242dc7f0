"""``blastoseg eval overlap``: pixel metrics of an overlap (SE-U-Net) model on a dataset.

Any dataset folder whose instances give the targets works: cytoplasm = union of the amodal
masks, overlap = pixels inside two or more of them, nuclei from the images' nuclei files
(skipped where a dataset has none). Overlap is thresholded at 0.3 as in the thesis.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from blastoseg.errors import DatasetFormatError
from blastoseg.io.dataset import read_dataset
from blastoseg.io.nuclei import load_nuclei
from blastoseg.metrics.pixel import PixelMetrics
from blastoseg.predict.base import load_predictor
from blastoseg.predict.overlap import OverlapPredictor
from blastoseg.targets.heads import head_targets

__all__ = ["EVAL_HEADS", "evaluate_overlap_model"]

#: the heads the thesis reports (Tables 5.1-5.6)
EVAL_HEADS = ("cytoplasm", "nuclei", "overlap")
#: the thesis evaluates the overlap head thresholded at 0.3 (section 5.4)
THESIS_OVERLAP_THRESHOLD = 0.3


def evaluate_overlap_model(model: str | OverlapPredictor, data: str | os.PathLike, *,
                           device: str = "auto", max_images: int | None = None,
                           overlap_threshold: float | None = THESIS_OVERLAP_THRESHOLD,
                           progress: Callable[[int, int], None] | None = None) -> dict:
    """Pixel metrics per head (accuracy, precision, recall, F1, IoU) of ``model`` on ``data``.

    ``overlap_threshold`` is 0.3 by default, the thesis's evaluation protocol, whatever the
    model card's own (calibrated) threshold is, so models are compared alike; None uses the
    card's. Returns ``{"model": name, "data": path, "n_images": n, "cytoplasm": {...},
    "nuclei": {...}, "overlap": {...}}``; heads the model lacks are left out.
    """
    ds = read_dataset(data)  # a bad dataset is refused before the model loads
    n = len(ds) if max_images is None else min(len(ds), max(int(max_images), 0))
    if n == 0:
        raise DatasetFormatError(f"{data}: no images to evaluate")
    predictor = model if isinstance(model, OverlapPredictor) else load_predictor(
        model, device, kind="overlap")
    heads = [h for h in EVAL_HEADS if h in predictor.heads]
    thresholds = {h: float(predictor.thresholds.get(h, 0.3 if h == "overlap" else 0.5))
                  for h in heads}
    if overlap_threshold is not None and "overlap" in thresholds:
        thresholds["overlap"] = float(overlap_threshold)
    metrics = PixelMetrics(heads, thresholds)
    for i in range(n):
        result = predictor.predict(ds.load_image(i))
        targets = head_targets(ds.instances(i), load_nuclei(ds, i), heads=heads)
        metrics.add(result.probabilities, targets)
        if progress is not None:
            progress(i + 1, n)
    return {"model": predictor.entry.name, "data": str(data), "n_images": n,
            **metrics.result()}
