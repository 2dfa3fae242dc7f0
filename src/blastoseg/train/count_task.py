"""Training task ``count``: Cell-Net (S2, Moradi Rad et al. 2019) density regression.

``blastoseg train count --data DIR[,DIR...] --val DIR --out JOB --config FILE``.

Config (``--config`` JSON)::

    {"model": {CellNetConfig fields: working_size, encoder, riap, puc, ...},
     "targets": {"sigma_ratio": 0.3},                      # dot axes / ellipse semi-axes
     "loss": {"name": "cbmse" | "mse", "alpha": 4.0, "tau": 0.05, "scale": 100.0,
              "count_weight": 0.0},                  # + weight x |integral error| (ours)
     "framing": {"use_localisation": true, "min_confidence": 0.15, "margin": 0.15},
     "hyper": {..., "threads": 1, "aug_strength": 1.0, "synth_per_epoch": 0,
               "val_frames": 60, "cache": true}}

``hyper.threads`` caps torch's CPU threads (the engine has no such setting; a shared 2-core
CPU trains faster with one thread per job). Validation runs the model on the framed
validation crops and reports ``count_exact`` (stage accuracy, the best-checkpoint metric),
``count_mae``, ``detection_rate``, ``ed_px`` (working pixels) and ``val_loss``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from blastoseg.metrics.counting_density import (
    count_from_density,
    density_peaks,
    evaluate_density_counts,
    peak_radius,
)
from blastoseg.models.cellnet import CellNet, CellNetConfig, CellNetConfigError
from blastoseg.models.encoder_transfer import init_encoder_from_amodal
from blastoseg.predict.cards import DEFAULT_MIN_CONFIDENCE
from blastoseg.predict.framing import DEFAULT_MARGIN
from blastoseg.targets.density import DEFAULT_SIGMA_RATIO
from blastoseg.train.augment import AugmentConfig
from blastoseg.train.count_data import CountDataset
from blastoseg.train.count_losses import DEFAULT_ALPHA, DEFAULT_TAU, LOSSES, count_loss
from blastoseg.train.job import TrainJob
from blastoseg.train.task import TrainingError, TrainTask, register_task
from blastoseg.weights.safetensors_io import WeightsError

__all__ = ["CountTask", "cellnet_config", "count_settings"]

KIND = "count"
DEFAULT_LOSS = {"name": "cbmse", "alpha": DEFAULT_ALPHA, "tau": DEFAULT_TAU, "scale": 100.0,
                "count_weight": 0.0}


def cellnet_config(config: Mapping[str, Any]) -> CellNetConfig:
    try:
        return CellNetConfig.from_dict(dict(config.get("model") or {}))
    except (CellNetConfigError, TypeError) as exc:
        raise TrainingError(f"bad count model config: {exc}") from None


def count_settings(config: Mapping[str, Any]) -> dict:
    """The loss, target and framing settings of a count config, defaults filled in."""
    loss = {**DEFAULT_LOSS, **dict(config.get("loss") or {})}
    if loss["name"] not in LOSSES:
        raise TrainingError(f"loss.name must be one of {sorted(LOSSES)}, got {loss['name']!r}")
    try:
        weight = float(loss["count_weight"])
    except (TypeError, ValueError):
        weight = float("nan")
    if not (weight >= 0 and weight < float("inf")):
        raise TrainingError(f"loss.count_weight must be a finite number >= 0, got "
                            f"{loss['count_weight']!r}")
    targets = {"sigma_ratio": DEFAULT_SIGMA_RATIO, **dict(config.get("targets") or {})}
    framing = {"use_localisation": True, "min_confidence": DEFAULT_MIN_CONFIDENCE,
               "margin": DEFAULT_MARGIN, **dict(config.get("framing") or {})}
    return {"loss": loss, "targets": targets, "framing": framing}


class CountTask(TrainTask):
    kind = KIND
    main_metric = "count_exact"
    higher_is_better = True

    def build_model(self, config: dict) -> nn.Module:
        threads = self.job.hyper.get("threads") if getattr(self, "job", None) else None
        if threads:
            torch.set_num_threads(max(int(threads), 1))
        model = CellNet(cellnet_config(config))
        source = (config.get("init") or {}).get("encoder")
        job = getattr(self, "job", None)
        # a fine-tune (job.base) loads all its weights afterwards: no need (a resumed run
        # pays the small copy, then its checkpoint overwrites it)
        if source and not (job is not None and job.base):
            try:
                init_encoder_from_amodal(model, source)
            except WeightsError as exc:
                raise TrainingError(f"init.encoder: {exc}") from None
        return model

    def make_datasets(self, job: TrainJob):
        cfg = cellnet_config(job.config)
        s = count_settings(job.config)
        common = {"working_size": cfg.working_size, "seed": job.seed,
                  "use_localisation": bool(s["framing"]["use_localisation"]),
                  "min_confidence": float(s["framing"]["min_confidence"]),
                  "margin": float(s["framing"]["margin"]),
                  "sigma_ratio": float(s["targets"]["sigma_ratio"]),
                  "cache": bool(job.hyper.get("cache", True))}
        try:
            train = CountDataset(
                job.train_paths(),
                augment=AugmentConfig(strength=float(job.hyper.get("aug_strength", 1.0))),
                synth_per_epoch=int(job.hyper.get("synth_per_epoch", 0)), **common)
        except ValueError as exc:
            raise TrainingError(f"count training data: {exc}") from None
        val = None
        if job.val_paths():
            val = CountDataset(job.val_paths(), augment=None,
                               max_items=int(job.hyper.get("val_frames", 60)), **common)
        return train, val

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = count_settings(self.job.config)["loss"]
        fn = LOSSES[loss["name"]]
        value = fn(pred, target, alpha=float(loss["alpha"]), tau=float(loss["tau"]),
                   scale=float(loss["scale"]))
        weight = float(loss["count_weight"])
        # our addition (0 = the paper's eq. 2 alone): the pixel loss barely sees a count
        # error spread thinly over the background (docs/models/count.md, "Count term")
        return value + weight * count_loss(pred, target) if weight else value

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        pred = model(batch["image"])
        loss = self._loss(pred.float(), batch["density"])
        return {"loss": loss, "count_abs_err": count_loss(pred.detach().float(),
                                                          batch["density"])}

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        radius = peak_radius(model.config.working_size)
        gt_pts, counts, pred_pts, losses = [], [], [], []
        for i in range(len(val)):
            item, centroids = val.item_with_centroids(i)
            image = item["image"][None].to(self.device)
            target = item["density"][None].to(self.device)
            pred = model(image).float()
            losses.append(float(self._loss(pred, target)))
            density = pred[0, 0].cpu().numpy()
            count, _ = count_from_density(density)
            gt_pts.append(centroids)
            counts.append(count)
            pred_pts.append(density_peaks(density, count, radius))
        r = evaluate_density_counts(gt_pts, counts, pred_pts)
        keys = ("count_exact", "count_mae", "count_within1", "detection_rate", "ed_px")
        out = {k: float(r[k]) if r.get(k) is not None else 0.0 for k in keys}
        out["val_loss"] = float(np.mean(losses)) if losses else 0.0
        return out

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        s = count_settings(job.config)
        return {
            "architecture": "CellNet (Moradi Rad et al. 2019, S2 section III.B)",
            "config": {"model": model.config.to_dict(), "targets": s["targets"],
                       "loss": s["loss"], "framing": s["framing"]},
        }


register_task(KIND, CountTask)
