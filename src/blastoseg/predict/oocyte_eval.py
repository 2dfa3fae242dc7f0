"""``blastoseg eval oocyte``: an oocyte model's class maps against a dataset's ground truth.

Pixel accuracy, mean IoU over the classes present, IoU per class (S3's Table 2 figures),
inclusion detection (true inclusions of >= 3 px touched by a predicted inclusion) and the
time per frame. The ground truth is painted from the dataset's objects
(:func:`blastoseg.io.oocyte_classes.class_map`); frames are compared at their own size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from blastoseg.errors import DatasetFormatError
from blastoseg.io.dataset import read_dataset
from blastoseg.io.oocyte_classes import class_map
from blastoseg.predict.base import load_predictor
from blastoseg.train.oocyte_task import evaluate_class_maps

__all__ = ["evaluate_oocyte_model"]


def evaluate_oocyte_model(model: str | None, data: str | Path, *, device: str = "auto",
                          max_images: int | None = None,
                          progress: Callable[[int, int], None] | None = None,
                          flips: bool = False) -> dict:
    """Metrics of ``model`` on the dataset folder ``data`` (a JSON-able dict); ``flips``:
    with test-time flips (:class:`~blastoseg.predict.oocyte.OocytePredictor`)."""
    ds = read_dataset(data)
    try:
        class_map(ds.instances(0), ds.categories) if len(ds) else None
    except ValueError as exc:
        raise DatasetFormatError(f"{data}: {exc}") from None
    n = len(ds) if max_images is None else min(len(ds), max(int(max_images), 0))
    if n == 0:
        raise DatasetFormatError(f"{data}: no images to evaluate")
    predictor = load_predictor(model, device, kind="oocyte", check_embryo=False,
                               **({"flips": True} if flips else {}))
    pairs, seconds = [], 0.0
    for i in range(n):
        image = ds.load_image(i)
        t0 = time.perf_counter()
        result = predictor.predict(image)
        seconds += time.perf_counter() - t0
        pairs.append((result.labels, class_map(ds.instances(i), ds.categories)))
        if progress is not None:
            progress(i + 1, n)
    out = evaluate_class_maps(pairs)
    out.update({"model": predictor.entry.name, "data": str(data), "flips": bool(flips),
                "ms_per_frame": round(1000 * seconds / n, 1)})
    return out
