"""Pick a brightfield model's score threshold: count error and instance F1 over a range of
thresholds, on a calibration set that is neither training nor benchmark data.

The SparseSEU-Net scores every one of its N predictions (class probability x maskness,
section 4.5.3); which of them a user sees as cells is decided by the card's
``postprocess.score_threshold``. AP does not depend on it (it ranks), but the count, the
measurements table and the napari layers do. The model runs once per image at score 0.05;
for each threshold of ``--thresholds`` the kept predictions are scored by

- count MAE: mean |cells found - cells annotated| per image;
- F1 at mask IoU 0.5: one-to-one matching (Hungarian on IoU) of kept predictions to the
  amodal ground truth, a pair counting when IoU >= 0.5.

The threshold with the best F1 (ties: lower count MAE) is printed as the one to put in the
card. Markdown to stdout, ``--json OUT`` keeps every number.

Usage (the calibration set of ``benchmarks/make_brightfield_data.py --seed 9``)::

    nice python benchmarks/brightfield_threshold_sweep.py --model brightfield-default \\
        --data ../data/bf_cal [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEFAULT_THRESHOLDS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7"
MATCH_IOU = 0.5


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of two stacks of (H, W) bool masks."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1.0)


def matches(iou: np.ndarray, min_iou: float = MATCH_IOU) -> int:
    """Pairs with IoU >= min_iou in the one-to-one assignment maximising total IoU."""
    from scipy.optimize import linear_sum_assignment

    if not iou.size:
        return 0
    rows, cols = linear_sum_assignment(-iou)
    return int((iou[rows, cols] >= min_iou).sum())


def sweep(model: str, data: str, thresholds: list[float], device: str = "cpu",
          max_images: int | None = None) -> dict[str, dict[str, float]]:
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.brightfield import BrightfieldPredictor

    predictor = BrightfieldPredictor(model, device=device, score_threshold=0.05)
    ds = read_dataset(data)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    per_image = []  # (gt masks, pred masks, pred scores)
    for i in range(n):
        gt = ds.instances(i)
        pred = predictor.predict(ds.load_image(i))
        per_image.append((gt.masks.astype(bool), pred.masks.astype(bool),
                          np.asarray(pred.scores, dtype=np.float32)))
    out = {}
    for t in thresholds:
        tp = n_pred = n_gt = 0
        errors = []
        for gt, pm, sc in per_image:
            keep = pm[sc >= t]
            tp += matches(mask_iou(keep, gt))
            n_pred += len(keep)
            n_gt += len(gt)
            errors.append(abs(len(keep) - len(gt)))
        precision = tp / max(n_pred, 1)
        recall = tp / max(n_gt, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        out[f"{t:g}"] = {"f1": f1, "precision": precision, "recall": recall,
                         "count_mae": float(np.mean(errors)) if errors else 0.0}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="brightfield-default")
    ap.add_argument("--data", required=True, help="calibration dataset folder")
    ap.add_argument("--thresholds", default=DEFAULT_THRESHOLDS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    rows = sweep(args.model, args.data, thresholds, args.device, args.max_images)
    best = max(rows, key=lambda t: (rows[t]["f1"], -rows[t]["count_mae"]))
    print(f"score threshold sweep: {args.model} on {args.data} (F1 at mask IoU {MATCH_IOU})\n")
    print("| threshold | F1 | precision | recall | count MAE |")
    print("|---|---|---|---|---|")
    for t, r in rows.items():
        mark = " **(best)**" if t == best else ""
        print(f"| {t}{mark} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} "
              f"| {r['count_mae']:.2f} |")
    print(f"\nbest: {best}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "data": args.data,
                                         "rows": rows, "best": float(best)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
