"""Semantic-segmentation metrics of class maps: pixel accuracy, per-class IoU, mean IoU (the
figures of S3's Table 2), and the detection of small objects (inclusions) as components.

The confusion matrix is summed over all images first (so a class's IoU is over the whole
set, as the paper reports it). mIoU averages the classes PRESENT in the ground truth of the
set (a class no image contains has no IoU; it is ``None`` in ``iou``, never NaN).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi

__all__ = ["ConfusionMatrix", "ComponentDetection"]


class ConfusionMatrix:
    """``counts[t, p]``: pixels of true class t predicted as p, summed over images."""

    def __init__(self, n_classes: int) -> None:
        self.n = int(n_classes)
        self.counts = np.zeros((self.n, self.n), np.int64)

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        pred, truth = np.asarray(pred, np.int64), np.asarray(truth, np.int64)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
        if pred.size and (min(pred.min(), truth.min()) < 0
                          or max(pred.max(), truth.max()) >= self.n):
            raise ValueError(f"class ids must be in 0..{self.n - 1}")
        self.counts += np.bincount(truth.ravel() * self.n + pred.ravel(),
                                   minlength=self.n * self.n).reshape(self.n, self.n)

    def iou(self) -> list[float | None]:
        """Per-class IoU; None for a class absent from both truth and prediction."""
        tp = np.diag(self.counts)
        union = self.counts.sum(0) + self.counts.sum(1) - tp
        return [float(tp[k] / union[k]) if union[k] else None for k in range(self.n)]

    def metrics(self, names: Mapping[int, str] | None = None) -> dict:
        """``accuracy``, ``mIoU`` (classes present in the truth), ``iou`` (name -> value)."""
        total = int(self.counts.sum())
        present = self.counts.sum(1) > 0
        ious = self.iou()
        vals = [ious[k] for k in range(self.n) if present[k] and ious[k] is not None]
        names = names or {k: str(k) for k in range(self.n)}
        return {"accuracy": float(np.trace(self.counts) / total) if total else None,
                "mIoU": float(np.mean(vals)) if vals else None,
                "iou": {names[k]: ious[k] for k in range(self.n)},
                "classes_present": [names[k] for k in range(self.n) if present[k]]}


class ComponentDetection:
    """Small objects of one class found as components: a true component of at least
    ``min_px`` pixels is found when a predicted pixel of the class touches it; a predicted
    component touching no true pixel of the class is a false detection."""

    def __init__(self, class_id: int, min_px: int = 3) -> None:
        self.class_id, self.min_px = int(class_id), int(min_px)
        self.found = self.total = self.false = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        p, t = np.asarray(pred) == self.class_id, np.asarray(truth) == self.class_id
        lab, n = ndi.label(t)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            hit = np.bincount(lab[p].ravel(), minlength=n + 1) > 0
            big = sizes[1:] >= self.min_px
            self.total += int(big.sum())
            self.found += int((big & hit[1:]).sum())
        plab, m = ndi.label(p)
        if m:
            touched = np.bincount(plab[t].ravel(), minlength=m + 1) > 0
            self.false += int((~touched[1:]).sum())

    def metrics(self) -> dict:
        return {"detection_rate": self.found / self.total if self.total else None,
                "found": self.found, "total": self.total, "false_detections": self.false}
