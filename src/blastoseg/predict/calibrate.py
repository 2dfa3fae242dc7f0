"""Calibrate an amodal model's post-processing on validation data: the score threshold that
decides which detections are cells, and the mask-IoU NMS threshold that removes duplicates.

Both are chosen to maximise exact-count accuracy (ties: lower count MAE) on frames that are
not the test set, and are stored in the model card (``config.postprocess``) so the predictor,
the CLI and the widgets use them by default. When the card has a layer rule
(:mod:`blastoseg.predict.amodal_post`), the counts of the grid are the rule's, so the two
values are chosen for counting as the predictor will count.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from blastoseg.errors import DatasetFormatError
from blastoseg.io.atomic import atomic_write_text, backup_existing
from blastoseg.io.dataset import read_dataset
from blastoseg.predict.amodal import AmodalPredictor
from blastoseg.predict.amodal_post import select_cells
from blastoseg.predict.mask_nms import mask_nms, mask_overlaps

SCORE_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NMS_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def calibrate_counts(
    model: str, data: str | Path, *, device: str = "auto", max_frames: int | None = None,
    score_grid: Sequence[float] = SCORE_GRID, nms_grid: Sequence[float] = NMS_GRID,
    progress: Callable[[int, int], None] | None = None, flips: bool | int = False,
) -> dict:
    """Grid-search (score threshold, mask NMS IoU) for exact counts on a dataset folder.

    Returns a dict with ``score_threshold``, ``mask_nms_iou``, ``count_exact``,
    ``count_mae``, ``n_frames`` and the full ``grid`` of results. ``flips``: the
    candidates of test-time flips (:mod:`blastoseg.predict.instance_flips`).
    """
    ds = read_dataset(data)
    n = len(ds) if max_frames is None else min(len(ds), max(int(max_frames), 0))
    if n == 0:
        raise DatasetFormatError(f"{data}: no frames to calibrate on")
    predictor = AmodalPredictor(model, device=device, score_threshold=0.0, mask_nms_iou=1.0,
                                flips=flips)
    rule = predictor.layer_rule
    true = np.array([len(ds.instances(i)) for i in range(n)])
    frames = [ds.load_image(i) for i in range(n)]
    # per frame: the candidates' pairwise mask IoU (computed once), scores, and what the
    # layer rule needs (binary masks and the map it reads)
    kept: list[tuple] = []
    for k, out in enumerate(predictor.raw_outputs(frames)):
        probs = out["masks"][:, 0].float()
        iou, area = mask_overlaps(probs)
        scores = out["scores"].float().cpu().numpy()
        signal = None
        if rule is not None:
            key = "layers" if rule.source == "layers" else "occlusion"
            signal = out[key][0].float().cpu().numpy() if key in out else None
        masks = (probs >= 0.5).cpu().numpy() if signal is not None else None
        kept.append((iou, area, scores, masks, signal))
        if progress:
            progress(k + 1, n)
    grid = []
    for iou_threshold in nms_grid:
        if rule is None:
            survivors = [s[mask_nms(iou, s, iou_threshold)] for iou, _, s, _, _ in kept]
        for thr in score_grid:
            if rule is None:
                pred = np.array([int((s >= thr).sum()) for s in survivors])
            else:
                pred = np.array([len(select_cells(iou, area, m, s, sig, score_threshold=thr,
                                                  mask_nms_iou=iou_threshold,
                                                  rule=rule if sig is not None else None)[0])
                                 for iou, area, s, m, sig in kept])
            grid.append({"mask_nms_iou": iou_threshold, "score_threshold": thr,
                         "count_exact": float((pred == true).mean()),
                         "count_mae": float(np.abs(pred - true).mean())})
    best = max(grid, key=lambda g: (g["count_exact"], -g["count_mae"]))
    return {**best, "n_frames": int(n), "data": str(data), "layer_rule": rule is not None,
            "grid": grid}


def write_postprocess(card_path: str | Path, result: dict) -> Path:
    """Store the calibrated values in a model card (the previous card is kept as a backup)."""
    path = Path(card_path)
    card = json.loads(path.read_text())
    post = card.setdefault("config", {}).setdefault("postprocess", {})
    # other post-processing settings (e.g. a fitted layer_rule) are kept
    post.update({
        "score_threshold": result["score_threshold"],
        "mask_nms_iou": result["mask_nms_iou"],
        "calibration": {k: result[k] for k in ("count_exact", "count_mae", "n_frames", "data")},
    })
    backup_existing(path)
    atomic_write_text(path, json.dumps(card, indent=2) + "\n")
    return path
