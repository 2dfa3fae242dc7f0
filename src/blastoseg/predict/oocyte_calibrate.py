"""Calibrate an oocyte model's class-prior offsets on validation data.

Why: inclusions, vacuoles and SER clusters cover 0.1-0.3 % of an oocyte image's pixels, so a
plain cross-entropy never predicts them (the first ``oocyte-default`` run: IoU 0 for all three
after 900 steps). Weighting the loss by class (``loss.class_weights``, e.g. median frequency)
makes the network find them, but the minimiser of a class-weighted cross-entropy is the
unweighted one shifted by log w_c per class (logit adjustment, Menon et al. 2021, eq. 7), so the
rare classes then spill over their neighbours. Adding ``-alpha * log(w_c)`` to the scores at
prediction undoes a share ``alpha`` of that shift: alpha = 0 keeps the weighted model's map,
alpha = 1 the unweighted prior. The share is chosen on the job's validation frames for the best
mean IoU over the classes present (ties: the smaller alpha) and stored in the model card as
``postprocess.logit_offsets`` (:class:`blastoseg.predict.cards.OocyteCard`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from blastoseg.errors import DatasetFormatError
from blastoseg.io.atomic import atomic_write_text, backup_existing
from blastoseg.io.dataset import read_dataset
from blastoseg.io.oocyte_classes import class_map
from blastoseg.predict.base import load_predictor

__all__ = ["ALPHAS", "calibrate_oocyte_offsets", "logit_offsets", "write_logit_offsets"]

#: shares of the weighted loss's log-prior shift that are tried
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def logit_offsets(weights: Sequence[float], alpha: float) -> list[float]:
    """``-alpha * log(w_c)`` per class (4 decimals; 0 where the weight is 1)."""
    return [round(-float(alpha) * math.log(float(w)), 4) + 0.0 for w in weights]


def calibrate_oocyte_offsets(model: str, data: str | Path, *, weights: Sequence[float],
                             device: str = "cpu", max_frames: int = 64,
                             alphas: Sequence[float] = ALPHAS) -> dict:
    """Choose alpha on the dataset ``data`` for a model trained with class ``weights``.

    The network runs once per frame; every alpha re-reads the same scores. Returns
    ``{"alpha", "logit_offsets", "mIoU", "mIoU_by_alpha", "n_frames", "data"}``."""
    from blastoseg.train.oocyte_task import evaluate_class_maps

    ds = read_dataset(data)
    n = min(len(ds), max(int(max_frames), 0))
    if n == 0:
        raise DatasetFormatError(f"{data}: no frames to calibrate the oocyte offsets on")
    try:  # not an oocyte dataset: said before the model loads
        class_map(ds.instances(0), ds.categories)
    except ValueError as exc:
        raise DatasetFormatError(f"{data}: {exc}") from None
    predictor = load_predictor(model, device, kind="oocyte", check_embryo=False)
    scores, truths = [], []
    for i in range(n):
        scores.append(predictor.frame_scores(ds.load_image(i)))
        truths.append(class_map(ds.instances(i), ds.categories))
    by_alpha = {}
    for alpha in alphas:
        off = torch.tensor(logit_offsets(weights, alpha))[:, None, None]
        pairs = [((s + off).argmax(0).numpy(), t) for s, t in zip(scores, truths, strict=True)]
        by_alpha[float(alpha)] = float(evaluate_class_maps(pairs)["mIoU"] or 0.0)
    best = max(by_alpha, key=lambda a: (by_alpha[a], -a))
    return {"alpha": best, "logit_offsets": logit_offsets(weights, best),
            "mIoU": by_alpha[best], "mIoU_by_alpha": {str(a): v for a, v in by_alpha.items()},
            "n_frames": n, "data": str(data)}


def write_logit_offsets(card_path: str | Path, offsets: Sequence[float],
                        calibration: dict) -> Path:
    """Store offsets and how they were chosen in a model card (the previous card kept as a
    backup)."""
    path = Path(card_path)
    card = json.loads(path.read_text())
    post = card.setdefault("config", {}).setdefault("postprocess", {})
    post["logit_offsets"] = [float(v) for v in offsets]
    post["calibration"] = dict(calibration)
    backup_existing(path)
    atomic_write_text(path, json.dumps(card, indent=2) + "\n")
    return path
