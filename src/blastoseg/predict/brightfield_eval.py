"""``blastoseg eval brightfield``: COCO mask AP of brightfield cell instances on a dataset.

:func:`evaluate_brightfield_model` runs a SparseSEU-Net (:class:`BrightfieldPredictor`);
:func:`evaluate_watershed_baseline` runs the thesis's "SEU-Net + wtshd" row: an overlap
(SE-U-Net) model's cytoplasm and nuclei maps split by a seeded watershed
(:func:`blastoseg.predict.watershed.watershed_from_result`). Both return the keys of
``blastoseg eval amodal --json`` (:func:`blastoseg.metrics.evaluate_amodal`: ``mAP``,
``AP50``, ``AP75``, ``AP_S``, ``AP_M``, ``AP_L``, ``AR``, the counting keys, ``by_count``,
``mAP_by_count`` ...) plus ``model``, ``data`` and ``method``.

Ground truth = the dataset's AMODAL masks at the image size. Mask AP uses every prediction
scoring >= 0.05, ranked by score; counting uses the model card's score threshold (or
``score_threshold``). The watershed's instances are disjoint (a watershed partitions the
image), so where cells overlap it can only find their visible parts - the gap the
overlap-aware model closes. Its scores are the mean cytoplasm probability of each region,
and every region counts (counting threshold 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from blastoseg.errors import DatasetFormatError
from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import read_dataset
from blastoseg.metrics import evaluate_amodal
from blastoseg.predict.base import load_predictor
from blastoseg.predict.brightfield import BrightfieldPredictor

__all__ = ["AP_SCORE_THRESHOLD", "evaluate_brightfield_model", "evaluate_watershed_baseline"]

#: predictions kept for AP (AP ranks them, so a high threshold would cut the curve)
AP_SCORE_THRESHOLD = 0.05


def _count(ds, max_images: int | None) -> int:
    n = len(ds) if max_images is None else min(len(ds), max(int(max_images), 0))
    if n == 0:
        raise DatasetFormatError(f"{ds.root}: no images to evaluate")
    return n


def evaluate_brightfield_model(model: str | BrightfieldPredictor, data: str | os.PathLike, *,
                               device: str = "auto", max_images: int | None = None,
                               score_threshold: float | None = None,
                               progress: Callable[[int, int], None] | None = None) -> dict:
    """Amodal mask AP and counting of a brightfield (SparseSEU-Net) model on ``data``.

    Parameters
    ----------
    model
        A registered model name / ``.safetensors`` path, or a :class:`BrightfieldPredictor`
        (its own post-processing is then used as given: build it with
        ``score_threshold=0.05`` for AP).
    data
        Dataset folder with ground truth.
    max_images
        Evaluate the first N images.
    score_threshold
        Counting threshold (default: the card's ``postprocess.score_threshold``).
    progress
        ``progress(done, total)`` after each image.
    """
    ds = read_dataset(data)  # a bad dataset is refused before the model loads
    n = _count(ds, max_images)
    if isinstance(model, BrightfieldPredictor):
        predictor = model
        count_threshold = predictor.score_threshold
    else:
        # every prediction AP can rank; counting uses the card's threshold
        predictor = load_predictor(model, device, kind="brightfield",
                                   score_threshold=AP_SCORE_THRESHOLD)
        count_threshold = predictor.card.score_threshold
    if score_threshold is not None:
        count_threshold = float(score_threshold)
    gt: list[FrameInstances] = []
    pred: list[FrameInstances] = []
    for i in range(n):
        gt.append(ds.instances(i))
        pred.append(predictor.predict(ds.load_image(i)))
        if progress is not None:
            progress(i + 1, n)
    result = evaluate_amodal(gt, pred, score_threshold=count_threshold,
                             categories=ds.categories)
    result.update({"model": predictor.entry.name, "data": str(data),
                   "method": "sparse_seunet"})
    return result


def evaluate_watershed_baseline(overlap_model, data: str | os.PathLike, *,
                                device: str = "auto", max_images: int | None = None,
                                progress: Callable[[int, int], None] | None = None,
                                **watershed) -> dict:
    """The "SEU-Net + wtshd" baseline: an overlap model's maps + seeded watershed, scored
    like :func:`evaluate_brightfield_model`.

    Parameters
    ----------
    overlap_model
        A registered overlap model name / path or an
        :class:`~blastoseg.predict.overlap.OverlapPredictor` (it needs a cytoplasm head;
        nuclei seeds are used when it has a nuclei head).
    **watershed
        Keyword arguments of :func:`~blastoseg.predict.watershed.watershed_instances`
        (``min_area``, ``basins``, thresholds ...).
    """
    from blastoseg.predict.overlap import OverlapPredictor
    from blastoseg.predict.watershed import watershed_from_result

    ds = read_dataset(data)  # a bad dataset is refused before the model loads
    n = _count(ds, max_images)
    predictor = (overlap_model if isinstance(overlap_model, OverlapPredictor)
                 else load_predictor(overlap_model, device, kind="overlap"))
    gt: list[FrameInstances] = []
    pred: list[FrameInstances] = []
    for i in range(n):
        gt.append(ds.instances(i))
        result = predictor.predict(ds.load_image(i))
        pred.append(watershed_from_result(result, **watershed))
        if progress is not None:
            progress(i + 1, n)
    out = evaluate_amodal(gt, pred, score_threshold=0.0, categories=ds.categories)
    out.update({"model": predictor.entry.name, "data": str(data),
                "method": "seunet+watershed"})
    return out
