"""Evaluation metrics: COCO mask AP through pycocotools, counting and centroid metrics, and
one combined amodal-segmentation report. All results are plain, JSON-serialisable Python
values; an undefined value is ``None`` (never NaN). See docs/metrics.md."""

from blastoseg.metrics.coco_eval import AP_KEYS, MAX_DETS, MetricsError, evaluate_masks
from blastoseg.metrics.counting import centroid_metrics, count_metrics
from blastoseg.metrics.report import evaluate_amodal, format_report

__all__ = ["AP_KEYS", "MAX_DETS", "MetricsError", "centroid_metrics", "count_metrics",
           "evaluate_amodal", "evaluate_masks", "format_report"]
