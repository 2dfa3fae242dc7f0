"""Training task ``shape_prior``: the VQ-VAE shape prior of S1 (Jang et al., section 3, eq. 1)
on amodal mask crops from dataset folders.

``blastoseg train shape_prior --data DIR --out JOB`` trains it; the amodal detector then
uses the registered model, frozen, through its config key ``shape_prior``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from blastoseg.io.dataset import read_dataset
from blastoseg.models.configs import VQVAEConfig
from blastoseg.models.vqvae import VQVAE
from blastoseg.train.job import TrainJob
from blastoseg.train.shape_prior_data import CropAugment, MaskCropDataset
from blastoseg.train.task import TrainingError, TrainTask, register_task

KIND = "shape_prior"


def _masks_of(paths: list, limit: int | None = None) -> list[np.ndarray]:
    masks: list[np.ndarray] = []
    for path in paths:
        ds = read_dataset(path)
        for i in range(len(ds)):
            masks.extend(ds.instances(i).masks)
            if limit is not None and len(masks) >= limit:
                return masks
    return masks


def _iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    tgt = target > 0.5
    inter = (pred & tgt).flatten(1).sum(1).float()
    union = (pred | tgt).flatten(1).sum(1).float().clamp(min=1)
    return inter / union


class ShapePriorTask(TrainTask):
    kind = KIND
    main_metric = "recon_iou"
    higher_is_better = True

    def build_model(self, config: dict) -> nn.Module:
        return VQVAE(VQVAEConfig.from_dict(config.get("vqvae", config)))

    def make_datasets(self, job: TrainJob):
        size = VQVAEConfig.from_dict(job.config.get("vqvae", job.config)).mask_size
        train_masks = _masks_of(job.train_paths())
        if not train_masks:
            raise TrainingError("the training datasets hold no instance masks")
        train = MaskCropDataset(train_masks, size=size, augment=CropAugment())
        val_paths = job.val_paths()
        val = MaskCropDataset(_masks_of(val_paths), size=size) if val_paths else None
        return train, val

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        out = model(batch)
        return {
            "loss": out.loss,
            "recon": out.recon_loss.detach(),
            "codebook": out.codebook_loss.detach(),
            "commitment": out.commitment_loss.detach(),
            "perplexity": out.perplexity.detach(),
        }

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        loader = torch.utils.data.DataLoader(val, batch_size=256, shuffle=False)
        ious, used = [], torch.zeros(model.config.codebook_size, dtype=torch.bool)
        for batch in loader:
            batch = batch.to(self.device)
            out = model(batch)
            ious.append(_iou(out.logits, batch).cpu())
            used[out.indices.flatten().cpu().unique()] = True
        iou = torch.cat(ious) if ious else torch.zeros(1)
        return {
            "recon_iou": float(iou.mean()),
            "recon_iou_p5": float(iou.quantile(0.05)),
            "codes_used": int(used.sum()),
        }

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        return {
            "architecture": "VQVAE (Jang et al. section 3)",
            "config": {"vqvae": model.config.to_dict()},
        }


register_task(KIND, ShapePriorTask)
