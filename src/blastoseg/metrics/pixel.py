"""Pixel metrics of probability maps against binary targets: accuracy, precision, recall, F1
and IoU, as the thesis reports them for the SE-U-Net heads (S4, Tables 5.1-5.6).

Counts are accumulated over all images first (micro average), so a large image weighs more
than a small one and an image without any positive pixel does not make F1 undefined. A value
whose denominator is zero is ``None`` (never NaN), like the other metrics here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PixelCounts", "PixelMetrics", "format_pixel_report"]

#: thresholds per head; the overlap head is thresholded at 0.3 as in the thesis (section 5.4)
DEFAULT_THRESHOLDS = {"overlap": 0.3}


@dataclass
class PixelCounts:
    """True/false positives/negatives of one head, summed over images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, prob: np.ndarray, target: np.ndarray, threshold: float) -> None:
        pred = np.asarray(prob) >= threshold
        tgt = np.asarray(target) > 0.5
        if pred.shape != tgt.shape:
            raise ValueError(f"prediction {pred.shape} and target {tgt.shape} differ in shape")
        tp = int(np.count_nonzero(pred & tgt))
        fp = int(np.count_nonzero(pred)) - tp
        fn = int(np.count_nonzero(tgt)) - tp
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.tn += pred.size - tp - fp - fn

    def metrics(self) -> dict[str, float | None]:
        def ratio(a: int, b: int) -> float | None:
            return float(a) / b if b else None

        total = self.tp + self.fp + self.fn + self.tn
        return {
            "accuracy": ratio(self.tp + self.tn, total),
            "precision": ratio(self.tp, self.tp + self.fp),
            "recall": ratio(self.tp, self.tp + self.fn),
            "f1": ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn),
            "iou": ratio(self.tp, self.tp + self.fp + self.fn),
        }


class PixelMetrics:
    """Accumulates per-head pixel counts over a dataset.

    >>> m = PixelMetrics(["cytoplasm", "overlap"])
    >>> m.add({"cytoplasm": prob_c, "overlap": prob_o}, {"cytoplasm": t_c, "overlap": t_o})
    >>> m.result()["overlap"]["f1"]
    """

    def __init__(self, heads, thresholds: dict[str, float] | None = None) -> None:
        self.heads = list(heads)
        self.thresholds = {h: 0.5 for h in self.heads}
        self.thresholds.update({h: t for h, t in DEFAULT_THRESHOLDS.items() if h in self.heads})
        self.thresholds.update(thresholds or {})
        self.counts = {h: PixelCounts() for h in self.heads}
        self.images = {h: 0 for h in self.heads}

    def add(self, probabilities: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> None:
        """One image: heads missing from either dict (e.g. no nuclei ground truth) are skipped."""
        for h in self.heads:
            if h in probabilities and h in targets and targets[h] is not None:
                self.counts[h].add(probabilities[h], targets[h], self.thresholds[h])
                self.images[h] += 1

    def result(self) -> dict[str, dict]:
        out = {}
        for h in self.heads:
            row = self.counts[h].metrics() if self.images[h] else {
                k: None for k in ("accuracy", "precision", "recall", "f1", "iou")}
            out[h] = {**row, "threshold": self.thresholds[h], "n_images": self.images[h]}
        return out


def format_pixel_report(result: dict[str, dict]) -> str:
    """A plain-text table of :meth:`PixelMetrics.result` (one row per head)."""
    def fmt(v) -> str:
        return "   n/a" if v is None else f"{v:6.3f}"

    lines = [f"{'head':<11} {'thr':>4} {'images':>6} {'acc':>6} {'prec':>6} {'recall':>6} "
             f"{'F1':>6} {'IoU':>6}"]
    for head, row in result.items():
        if not isinstance(row, dict) or "f1" not in row:
            continue
        lines.append(f"{head:<11} {row['threshold']:>4.2f} {row['n_images']:>6} "
                     f"{fmt(row['accuracy'])} {fmt(row['precision'])} {fmt(row['recall'])} "
                     f"{fmt(row['f1'])} {fmt(row['iou'])}")
    return "\n".join(lines)
