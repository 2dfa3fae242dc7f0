"""Training task ``localiser``: CircleNet, the learned half of the embryo localiser.

``blastoseg train localiser --data DIR[,DIR...] --val DIR --out JOB --config FILE``; the data
are dataset folders whose images carry ``embryo_circle`` (synthetic frames do).

Config (``--config`` JSON)::

    {"model": {"input_size": 128, "width": 24},
     "loss": {"radius_weight": 5.0},
     "hyper": {..., "threads": 1, "val_frames": 100}}

Validation runs the model on whole (letterboxed) validation frames and reports, as
``benchmarks/localise_benchmark.py`` does on real frames, ``within_10pct`` (centre and radius
both within 10 % of the true radius; the best-checkpoint metric), ``centre_err`` and
``radius_err`` (medians, fractions of the true radius) and ``val_loss``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from blastoseg.models.circle_net import CircleNet, CircleNetConfig, CircleNetConfigError
from blastoseg.targets.circle_heatmap import circle_loss, circle_targets, decode_circles
from blastoseg.train.job import TrainJob
from blastoseg.train.localiser_data import LocaliserDataset
from blastoseg.train.task import TrainingError, TrainTask, register_task

__all__ = ["LocaliserTask", "circle_net_config"]

KIND = "localiser"
DEFAULT_RADIUS_WEIGHT = 5.0


def circle_net_config(config: Mapping[str, Any]) -> CircleNetConfig:
    try:
        return CircleNetConfig.from_dict(dict(config.get("model") or {}))
    except (CircleNetConfigError, TypeError) as exc:
        raise TrainingError(f"bad localiser model config: {exc}") from None


def circle_errors(found: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Median centre and radius errors (fractions of the true radius) and the share of
    circles within 10 % of both, for (N, 3) found and true circles."""
    centre = np.hypot(found[:, 0] - true[:, 0], found[:, 1] - true[:, 1]) / true[:, 2]
    radius = np.abs(found[:, 2] - true[:, 2]) / true[:, 2]
    return {"within_10pct": float(np.mean((centre <= 0.1) & (radius <= 0.1))),
            "centre_err": float(np.median(centre)), "radius_err": float(np.median(radius))}


class LocaliserTask(TrainTask):
    kind = KIND
    main_metric = "within_10pct"
    higher_is_better = True

    def build_model(self, config: dict) -> nn.Module:
        threads = self.job.hyper.get("threads") if getattr(self, "job", None) else None
        if threads:
            torch.set_num_threads(max(int(threads), 1))
        return CircleNet(circle_net_config(config))

    def make_datasets(self, job: TrainJob):
        size = circle_net_config(job.config).input_size
        try:
            train = LocaliserDataset(job.train_paths(), size, augment=True, seed=job.seed)
            val = None
            if job.val_paths():
                val = LocaliserDataset(job.val_paths(), size, augment=False,
                                       max_items=int(job.hyper.get("val_frames", 100)))
        except ValueError as exc:
            raise TrainingError(f"localiser training data: {exc}") from None
        return train, val

    def _radius_weight(self) -> float:
        loss = dict(self.job.config.get("loss") or {})
        return float(loss.get("radius_weight", DEFAULT_RADIUS_WEIGHT))

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        size = batch["image"].shape[-1]
        targets = {k: v.to(batch["image"].device)
                   for k, v in circle_targets(batch["circle"].cpu(), size).items()}
        return circle_loss(model(batch["image"]), targets, self._radius_weight())

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        found, true, losses = [], [], []
        loader = torch.utils.data.DataLoader(val, batch_size=16, shuffle=False)
        for batch in loader:
            batch = self.move_to_device(batch, self.device)
            out = model(batch["image"])
            size = batch["image"].shape[-1]
            targets = {k: v.to(self.device)
                       for k, v in circle_targets(batch["circle"].cpu(), size).items()}
            losses.append(float(circle_loss(out, targets, self._radius_weight())["loss"]))
            circles, _ = decode_circles(out)
            found.append(circles)
            true.append(batch["circle"].cpu().numpy())
        metrics = circle_errors(np.concatenate(found), np.concatenate(true))
        metrics["val_loss"] = float(np.mean(losses)) if losses else 0.0
        return metrics

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        return {
            "architecture": "CircleNet (CenterNet-style heat map + log radius, stride 4)",
            "config": {"model": model.config.to_dict(),
                       "loss": {"radius_weight": self._radius_weight()}},
        }


register_task(KIND, LocaliserTask)
