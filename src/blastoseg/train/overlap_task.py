"""Training task ``overlap``: the SE-U-Net of S4 (Prytula 2023, sections 4.2-4.3) with
decoupled decoder heads and the overlap-aware probability map in the overlap head's loss.

``blastoseg train overlap --data DIR[,DIR...] --val DIR --out JOB --config FILE``.

Config (``--config`` JSON)::

    {"seunet": {SEUNetConfig fields, e.g. "heads": [...], "base_width": 16},
     "probability": {"variant": "combined_border_overlap", ...params},
     "loss": {"overlap": "focal_reweighted", "weights": {"cytoplasm": 1.0, ...}},
     "data": {"crop": 256, "repeats": 4, "border_width": 2, "scale": 1.0},
     "hyper": {...}}

The validation metrics are the pixel metrics of ``blastoseg eval overlap`` (overlap
thresholded at 0.3, section 5.4); ``val_score`` (the best-checkpoint metric) is the mean of
the cytoplasm IoU and the overlap F1 that the model has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from blastoseg.metrics.pixel import PixelMetrics
from blastoseg.models.seunet import SEUNet, SEUNetConfig
from blastoseg.train.job import TrainJob
from blastoseg.train.overlap_data import OverlapDataset
from blastoseg.train.overlap_losses import seunet_loss
from blastoseg.train.task import TrainingError, TrainTask, register_task

KIND = "overlap"
DEFAULT_PROBABILITY = {"variant": "none"}
#: alpha None: no class balancing in the focal terms (overlaps are rare; Lin et al.'s 0.25
#: would down-weight them further); P already re-weights the pixels (eq. 4.5)
DEFAULT_LOSS = {"overlap": "focal_reweighted", "weights": {}, "gamma": 2.0, "alpha": None}


def seunet_config(config: Mapping[str, Any]) -> SEUNetConfig:
    return SEUNetConfig.from_dict(dict(config.get("seunet", {})))


def split_batch(batch: Mapping[str, torch.Tensor], heads) -> tuple[dict, dict]:
    """(B, K, H, W) targets and (B, K) presence -> per-head (B, 1, H, W) / (B,) dicts."""
    targets = {h: batch["targets"][:, k:k + 1] for k, h in enumerate(heads)}
    present = {h: batch["present"][:, k] for k, h in enumerate(heads)}
    return targets, present


class OverlapTask(TrainTask):
    kind = KIND
    main_metric = "val_score"
    higher_is_better = True

    def build_model(self, config: dict) -> nn.Module:
        return SEUNet(seunet_config(config))

    def _data_options(self, job: TrainJob) -> dict:
        data = dict(job.config.get("data", {}))
        # a fine-tuning job carries its base card's config: keep the base's working scale
        pre_scale = dict(job.config.get("preprocess", {}) or {}).get("scale", 1.0)
        return {"crop": int(data.get("crop", 256)), "repeats": int(data.get("repeats", 4)),
                "border_width": int(data.get("border_width", 2)),
                "scale": float(data.get("scale", pre_scale))}

    def make_datasets(self, job: TrainJob):
        cfg = seunet_config(job.config)
        opts = self._data_options(job)
        prob = dict(job.config.get("probability", DEFAULT_PROBABILITY))
        multiple = 2 ** cfg.depth
        train = OverlapDataset(job.train_paths(), cfg.heads, crop=opts["crop"], probability=prob,
                               augment=True, repeats=opts["repeats"], multiple=multiple,
                               border_width=opts["border_width"], seed=job.seed,
                               scale=opts["scale"])
        if len(train) == 0:
            raise TrainingError("the training datasets hold no images")
        val = None
        if job.val_paths():
            val = OverlapDataset(job.val_paths(), cfg.heads, crop=None, probability=prob,
                                 augment=False, multiple=multiple,
                                 border_width=opts["border_width"], scale=opts["scale"],
                                 max_images=int(job.hyper.get("val_frames", 60)))
        return train, val

    def _loss_options(self) -> dict:
        loss = {**DEFAULT_LOSS, **dict(self.job.config.get("loss", {}))}
        return {"overlap_loss": str(loss["overlap"]), "weights": dict(loss.get("weights") or {}),
                "gamma": float(loss["gamma"]),
                "alpha": None if loss["alpha"] is None else float(loss["alpha"])}

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        out = model(batch["image"])
        targets, present = split_batch(batch, model.config.heads)
        opts = self._loss_options()
        losses = seunet_loss(out.logits, targets, present, batch["prob"], opts["weights"],
                             overlap_loss=opts["overlap_loss"], gamma=opts["gamma"],
                             alpha=opts["alpha"])
        return {"loss": losses["loss"],
                **{k: v.detach() for k, v in losses.items() if k != "loss"}}

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        heads = model.config.heads
        metrics = PixelMetrics(heads)
        loader = DataLoader(val, batch_size=1, shuffle=False)
        for batch in loader:
            batch = self.move_to_device(batch, self.device)
            out = model(batch["image"])
            probs = {h: torch.sigmoid(out.logits[h])[0, 0].float().cpu().numpy() for h in heads}
            t = batch["targets"][0].cpu().numpy()
            present = batch["present"][0].cpu().numpy()
            metrics.add(probs, {h: t[k] for k, h in enumerate(heads) if present[k]})
        return summarise(metrics.result())

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        return {
            "architecture": "SEUNet (Prytula 2023, S4 section 4.2)",
            "config": {
                "seunet": model.config.to_dict(),
                "preprocess": {"percentiles": [1.0, 99.8],
                               "scale": self._data_options(job)["scale"]},
                "threshold": {"overlap": 0.3, "cytoplasm": 0.5, "nuclei": 0.5,
                              "border": 0.5, "background": 0.5},
                "probability": dict(job.config.get("probability", DEFAULT_PROBABILITY)),
                "loss": {**DEFAULT_LOSS, **dict(job.config.get("loss", {}))},
            },
        }


def summarise(result: Mapping[str, Mapping]) -> dict[str, float]:
    """Flat validation metrics (``cytoplasm_iou``, ``overlap_f1`` ...) and ``val_score``."""
    flat: dict[str, float] = {}
    for head, row in result.items():
        for key in ("f1", "iou", "precision", "recall"):
            if row.get(key) is not None:
                flat[f"{head}_{key}"] = float(row[key])
    parts = [flat[k] for k in ("cytoplasm_iou", "overlap_f1") if k in flat]
    flat["val_score"] = float(np.mean(parts)) if parts else 0.0
    return flat


register_task(KIND, OverlapTask)
