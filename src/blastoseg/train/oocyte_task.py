"""Training task ``oocyte``: SMANet (S3, Andreini et al. section 2.2) oocyte class maps.

``blastoseg train oocyte --data DIR[,DIR...] --val DIR --out JOB --config configs/oocyte_default.json``
(add ``--base MODEL`` to fine-tune: the paper's synthetic-then-real recipe).

Config (``--config`` JSON)::

    {"model": {SMANetConfig fields: widths, dilations, scales, psp_bins, working_size, ...},
     # or the S4 comparison: "architecture": "seunet", "seunet": {...}, "working_size": 256
     "loss": {"class_weights": null | [w0, ..., w6]},
     "hyper": {..., "threads": 1, "aug_strength": 1.0, "repeats": 1, "val_frames": 64}}

Loss: pixel-wise cross-entropy over the 7 classes (the paper's), optionally class-weighted
(inclusions cover ~0.1 % of the pixels). ``hyper.threads`` caps torch's CPU threads (a
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

__all__ = ["OocyteTask", "class_weights", "network_config"]

KIND = "oocyte"


def network_config(config: Mapping[str, Any]) -> OocyteNetworkConfig:
    """The job's network: SMANet (``model``) or the SE-U-Net comparison (``architecture``
    ``"seunet"``), see :mod:`blastoseg.models.oocyte_networks`."""
    try:
        return oocyte_network_config(config)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"bad oocyte model config: {exc}") from None


def class_weights(config: Mapping[str, Any]) -> list[float] | None:
    """The loss's class weights (None: plain cross-entropy), checked."""
    w = dict(config.get("loss") or {}).get("class_weights")
    if w is None:
        return None
    if (not isinstance(w, (list, tuple)) or len(w) != N_CLASSES
            or any(not isinstance(v, (int, float)) or v <= 0 for v in w)):
        raise TrainingError(f"loss.class_weights must be {N_CLASSES} positive numbers "
                            f"(classes {list(CLASS_NAMES.values())}), got {w!r}")
    return [float(v) for v in w]


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
        class_weights(job.config)  # a bad weight list fails before any data is read
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
        return train, val

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = class_weights(self.job.config)
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
                                "class_weights": class_weights(job.config)}},
        }


register_task(KIND, OocyteTask)
