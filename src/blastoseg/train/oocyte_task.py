"""Training task ``oocyte``: SMANet (S3, Andreini et al. section 2.2) oocyte class maps.

``blastoseg train oocyte --data DIR[,DIR...] --val DIR --out JOB --config configs/oocyte_default.json``
(add ``--base MODEL`` to fine-tune: the paper's synthetic-then-real recipe).

Config (``--config`` JSON)::

    {"model": {SMANetConfig fields: widths, dilations, scales, psp_bins, working_size, ...},
     # or the S4 comparison: "architecture": "seunet", "seunet": {...}, "working_size": 256
     "loss": {"class_weights": null | [w0, ..., w6] | "median_frequency"},
     "hyper": {..., "threads": 1, "aug_strength": 1.0, "repeats": 1, "val_frames": 64}}

Loss: pixel-wise cross-entropy over the 7 classes (the paper's), optionally class-weighted
(inclusions cover ~0.1 % of the pixels). ``"median_frequency"`` computes the weights from the
training labels when the job starts (median-frequency balancing, Eigen & Fergus 2015:
w_c = median_f / f_c over the classes present), so a clinic's own data gets its own. ``hyper.threads`` caps torch's CPU threads (a
shared 2-core CPU trains faster with one thread per job). Validation: pixel ``accuracy``,
``mIoU`` over the classes present (the best-checkpoint metric), per-class ``iou_<class>``,
``inclusion_detection`` (share of true inclusions of >= 3 px touched by a predicted one) and
``val_loss``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blastoseg.io.oocyte_classes import CLASS_NAMES, INCLUSION, N_CLASSES
from blastoseg.metrics.semantic import ComponentDetection, ConfusionMatrix
from blastoseg.models.oocyte_networks import (
    OocyteNetworkConfig,
    build_oocyte_network,
    oocyte_network_config,
)
from blastoseg.train.augment import AugmentConfig
from blastoseg.train.job import TrainJob
from blastoseg.train.oocyte_data import OocyteDataset
from blastoseg.train.task import TrainingError, TrainTask, register_task

__all__ = ["MEDIAN_FREQUENCY", "OocyteTask", "class_weights", "median_frequency_weights",
           "network_config"]

KIND = "oocyte"


def network_config(config: Mapping[str, Any]) -> OocyteNetworkConfig:
    """The job's network: SMANet (``model``) or the SE-U-Net comparison (``architecture``
    ``"seunet"``), see :mod:`blastoseg.models.oocyte_networks`."""
    try:
        return oocyte_network_config(config)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"bad oocyte model config: {exc}") from None


#: the value of ``loss.class_weights`` that asks for weights computed from the data
MEDIAN_FREQUENCY = "median_frequency"
#: frames read to measure class frequencies (evenly spaced over the training set)
FREQUENCY_FRAMES = 200
#: cap on a median-frequency weight: a class seen on a handful of pixels must not rule the loss
MAX_WEIGHT = 100.0


def class_weights(config: Mapping[str, Any]) -> list[float] | str | None:
    """The loss's class weights (None: plain cross-entropy; ``"median_frequency"``: computed
    from the training labels by :func:`median_frequency_weights`), checked."""
    w = dict(config.get("loss") or {}).get("class_weights")
    if w is None or w == MEDIAN_FREQUENCY:
        return w
    if (not isinstance(w, (list, tuple)) or len(w) != N_CLASSES
            or any(not isinstance(v, (int, float)) or v <= 0 for v in w)):
        raise TrainingError(f"loss.class_weights must be {N_CLASSES} positive numbers "
                            f"(classes {list(CLASS_NAMES.values())}) or "
                            f"{MEDIAN_FREQUENCY!r}, got {w!r}")
    return [float(v) for v in w]


def median_frequency_weights(label_maps) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus 2015): w_c = median(f) / f_c, with f_c the
    share of pixels of class c over the given class maps and the median taken over the
    classes present; absent classes get weight 1 (they never meet the loss), weights are
    capped at :data:`MAX_WEIGHT` and rounded to 4 significant digits (readable in the card)."""
    counts = np.zeros(N_CLASSES, np.float64)
    for labels in label_maps:
        counts += np.bincount(np.asarray(labels).ravel(), minlength=N_CLASSES)[:N_CLASSES]
    if counts.sum() == 0:
        raise TrainingError("median-frequency class weights: the training labels are empty")
    freq = counts / counts.sum()
    med = float(np.median(freq[freq > 0]))
    return [float(f"{min(med / f, MAX_WEIGHT):.4g}") if f > 0 else 1.0 for f in freq]


def evaluate_class_maps(pairs) -> dict[str, Any]:
    """Metrics of ``(predicted, true)`` class-map pairs: accuracy, mIoU, per-class IoU and
    inclusion detection (shared by validation and ``blastoseg eval oocyte``)."""
    cm = ConfusionMatrix(N_CLASSES)
    det = ComponentDetection(INCLUSION, min_px=3)
    n = 0
    for pred, truth in pairs:
        cm.add(pred, truth)
        det.add(pred, truth)
        n += 1
    out = cm.metrics(CLASS_NAMES)
    d = det.metrics()
    out.update({"inclusion_detection": d["detection_rate"], "inclusions_found": d["found"],
                "inclusions_total": d["total"], "false_inclusions": d["false_detections"],
                "n_images": n})
    return out


class OocyteTask(TrainTask):
    kind = KIND
    main_metric = "mIoU"
    higher_is_better = True

    def build_model(self, config: dict) -> nn.Module:
        threads = self.job.hyper.get("threads") if getattr(self, "job", None) else None
        if threads:
            torch.set_num_threads(max(int(threads), 1))
        cfg = network_config(config)
        if cfg.n_classes != N_CLASSES:
            raise TrainingError(f"an oocyte model has {N_CLASSES} classes, the config says "
                                f"{cfg.n_classes}")
        return build_oocyte_network(cfg)

    def make_datasets(self, job: TrainJob):
        cfg = network_config(job.config)
        weights = class_weights(job.config)  # a bad weight list fails before any data is read
        try:
            train = OocyteDataset(
                job.train_paths(), cfg.working_size, seed=job.seed,
                augment=AugmentConfig(strength=float(job.hyper.get("aug_strength", 1.0))),
                repeats=int(job.hyper.get("repeats", 1)))
            val = (OocyteDataset(job.val_paths(), cfg.working_size,
                                 max_items=int(job.hyper.get("val_frames", 64)))
                   if job.val_paths() else None)
        except ValueError as exc:
            raise TrainingError(f"oocyte training data: {exc}") from None
        self._weights = weights
        if weights == MEDIAN_FREQUENCY:
            n = len(train.index)
            picks = range(0, n, max(n // FREQUENCY_FRAMES, 1))
            self._weights = median_frequency_weights(train.labels(k) for k in picks)
        return train, val

    def _class_weights(self) -> list[float] | None:
        # computed by make_datasets (median frequency) or read from the config
        if hasattr(self, "_weights"):
            return self._weights
        w = class_weights(self.job.config)
        return None if w == MEDIAN_FREQUENCY else w

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = self._class_weights()
        weight = None if w is None else torch.tensor(w, device=logits.device)
        return F.cross_entropy(logits.float(), labels, weight=weight)

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        logits = model(batch["image"])
        loss = self._loss(logits, batch["labels"])
        with torch.no_grad():
            acc = (logits.argmax(1) == batch["labels"]).float().mean()
        return {"loss": loss, "pixel_accuracy": acc}

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        losses, pairs = [], []
        for k in range(len(val)):
            item = val[k]
            logits = model(item["image"][None].to(self.device)).float()
            labels = item["labels"][None].to(self.device)
            losses.append(float(self._loss(logits, labels)))
            pairs.append((logits.argmax(1)[0].cpu().numpy(), labels[0].cpu().numpy()))
        r = evaluate_class_maps(pairs)
        out = {"mIoU": r["mIoU"] or 0.0, "accuracy": r["accuracy"] or 0.0,
               "inclusion_detection": r["inclusion_detection"] or 0.0,
               "val_loss": float(np.mean(losses)) if losses else 0.0}
        out.update({f"iou_{name}": v for name, v in r["iou"].items() if v is not None})
        return out

    def finalise_card(self, job: TrainJob, weights_path, card_path) -> dict | None:
        """With class weights, calibrate the class-prior offsets on the validation frames
        (:mod:`blastoseg.predict.oocyte_calibrate`) and store them in the card; a fine-tune
        without validation frames keeps its base's. Hyper ``calibrate`` (True) turns it off."""
        from blastoseg.predict.oocyte_calibrate import (
            calibrate_oocyte_offsets,
            write_logit_offsets,
        )

        weights = self._class_weights()
        if not weights or not bool(job.hyper.get("calibrate", True)):
            return None
        val = job.val_paths()
        if val:
            result = calibrate_oocyte_offsets(
                str(weights_path), val[0], weights=weights, device=str(self.device),
                max_frames=int(job.hyper.get("val_frames", 64)))
            summary = {k: result[k] for k in ("alpha", "mIoU", "mIoU_by_alpha", "n_frames",
                                              "data")}
            write_logit_offsets(card_path, result["logit_offsets"], summary)
            return summary
        if job.base:
            from blastoseg.weights import resolve_model

            post = resolve_model(job.base, kind=KIND).card.config.get("postprocess") or {}
            if post.get("logit_offsets") is not None:
                write_logit_offsets(card_path, post["logit_offsets"],
                                    {**(post.get("calibration") or {}), "from_base": job.base})
                return {"logit_offsets": post["logit_offsets"], "from_base": job.base}
        return None

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        cfg = network_config(job.config)
        what = ("SMANet (Andreini et al., oocyte segmentation, section 2.2: dilated ResNet, "
                "multiscale attention, two-level decoder)" if cfg.architecture == "smanet"
                else "SE-U-Net (S4) with a softmax classifier over the oocyte classes")
        return {
            "architecture": what,
            "config": {**cfg.to_card(),
                       "classes": {str(k): v for k, v in CLASS_NAMES.items()},
                       "loss": {"name": "cross_entropy",
                                "class_weights": self._class_weights(),
                                "class_weights_from": MEDIAN_FREQUENCY
                                if class_weights(job.config) == MEDIAN_FREQUENCY
                                else "config"}},
        }


register_task(KIND, OocyteTask)
