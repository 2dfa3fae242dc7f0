"""``blastoseg eval localiser``: how well the embryo localiser finds the labelled circle.

Any dataset folder whose image entries carry ``embryo_circle`` ([cx, cy, r], the zona's
outer face) is a test set: synthetic frames have it, real frames get it by labelling (see
``benchmarks/data/`` for ours). The errors are those of ``benchmarks/localise_benchmark.py``:
centre distance and radius difference as fractions of the true radius, their medians, and
the share of frames within 10 % of both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from blastoseg.errors import DatasetFormatError
from blastoseg.io.frames import grey_frame
from blastoseg.predict.localise import locate_embryo
from blastoseg.train.localiser_data import circle_frames
from blastoseg.train.localiser_task import circle_errors

__all__ = ["evaluate_localiser"]


def evaluate_localiser(data: str | Path, *, method: str = "auto", model: str | None = None,
                       max_images: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> dict:
    """Run :func:`~blastoseg.predict.localise.locate_embryo` on every image of ``data`` with
    an ``embryo_circle``; returns the errors, ``not_found`` (frames the localiser gave up
    on), ``n_images`` and ``ms_per_frame``."""
    cases = circle_frames([Path(data)])
    if max_images is not None:
        cases = cases[:max(int(max_images), 0)]
    if not cases:
        raise DatasetFormatError(f"{data}: no image with an embryo_circle to evaluate (the "
                                 "localiser's ground truth, a key of each image entry)")
    found, true, missing, seconds = [], [], 0, 0.0
    for k, (ds, i, circle) in enumerate(cases):
        grey = grey_frame(ds.load_image(i), min_side=1)
        t0 = time.perf_counter()
        box = locate_embryo(grey, method=method, model=model)
        seconds += time.perf_counter() - t0
        missing += int(not box.found)
        found.append((box.cx, box.cy, box.radius))
        true.append(circle)
        if progress is not None:
            progress(k + 1, len(cases))
    result = circle_errors(np.asarray(found, dtype=float), np.asarray(true, dtype=float))
    return {"data": str(data), "method": method, "model": model or "localiser-default",
            **result, "not_found": missing, "n_images": len(cases),
            "ms_per_frame": round(1000 * seconds / len(cases), 1)}
