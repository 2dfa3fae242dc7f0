"""Training task ``oocyte-translator``: label map -> oocyte image, the pix2pix of S4 reused
(Andreini et al. section 2.1: synthetic images from random label maps by image-to-image
translation).

``blastoseg train oocyte-translator --data DIR --val DIR --out JOB [--config FILE]``

Data: oocyte dataset folders (a clinic's annotated oocytes, or synthetic ones): each image
gives one pair, input = its class map one-hot (7 channels, :mod:`blastoseg.io.oocyte_classes`),
target = the grey image normalised with its (1, 99.8) percentiles to [-1, 1]. Everything else
is the S4 pix2pix task (:class:`blastoseg.train.pix2pix_task.Pix2PixTask`): the networks
(:class:`~blastoseg.models.pix2pix.Pix2Pix`, here ``in_channels`` 7 and ``out_channels`` 1),
eq. 4 of Isola et al. as the loss, random crops, flips and 90-degree rotations, and the
validation L1 (``val_l1``) on whole images; the condition travels under the pix2pix task's
``"phase"`` key.

Config (``--config`` JSON)::

    {"pix2pix": {Pix2PixConfig fields; in/out channels are set here},
     "data": {"crop": 128, "repeats": 4, "flip": true, "rot90": true},
     "hyper": {..., "l1_weight": 100.0, "val_frames": 16, "threads": 1}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from blastoseg.io.dataset import read_dataset
from blastoseg.io.frames import grey_frame
from blastoseg.io.oocyte_classes import CLASS_NAMES, N_CLASSES, class_map
from blastoseg.models.pix2pix import Pix2Pix, Pix2PixConfig
from blastoseg.predict.oocyte_input import normalise01
from blastoseg.train.job import TrainJob
from blastoseg.train.pix2pix_task import (
    DEFAULT_DATA,
    Pix2PixTask,
    paired_item,
    pix2pix_config,
)
from blastoseg.train.task import TrainingError, register_task

__all__ = ["KIND", "LabelImagePairs", "OocyteTranslatorTask", "one_hot"]

KIND = "oocyte-translator"


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(H, W) class map -> (7, H, W) float32 one-hot (the generator's input)."""
    return (np.arange(N_CLASSES)[:, None, None] == np.asarray(labels)[None]).astype(np.float32)


class LabelImagePairs(TorchDataset):
    """(class map one-hot, image in [-1, 1]) pairs of oocyte datasets; random crops and
    flips / 90-degree rotations for training, whole images padded to ``multiple`` otherwise."""

    def __init__(self, paths, *, crop: int | None = 128, repeats: int = 1, flip: bool = True,
                 rot90: bool = True, multiple: int = 1, max_items: int | None = None,
                 seed: int = 0) -> None:
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for p in paths:
            ds = read_dataset(p)
            for i in range(len(ds)):
                if max_items is not None and len(self.pairs) >= max_items:
                    break
                labels = class_map(ds.instances(i), ds.categories)
                image = 2.0 * normalise01(grey_frame(ds.load_image(i), min_side=8)) - 1.0
                self.pairs.append((one_hot(labels), image[None].astype(np.float32)))
        if not self.pairs:
            raise ValueError("no images in the training data")
        self.crop, self.repeats = crop, max(int(repeats), 1)
        self.flip, self.rot90, self.multiple = bool(flip), bool(rot90), max(int(multiple), 1)
        self.seed, self.epoch = int(seed), 0

    def __len__(self) -> int:
        return len(self.pairs) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: new crops and flips."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, y = self.pairs[index % len(self.pairs)]
        # flips are horizontal only (the 90-degree turns give the other orientations)
        return paired_item(x, y, crop=self.crop, flip=self.flip, vertical_flip=False,
                           rot90=self.rot90, multiple=self.multiple,
                           rng=np.random.default_rng([self.seed, self.epoch, int(index)]))


def translator_config(config: Mapping[str, Any]) -> Pix2PixConfig:
    """The pix2pix config of a translator: one-hot classes in, one grey channel out."""
    given = dict(config.get("pix2pix") or {})
    return pix2pix_config({"pix2pix": {**given, "in_channels": N_CLASSES, "out_channels": 1}})


class OocyteTranslatorTask(Pix2PixTask):
    kind = KIND

    def build_model(self, config: dict) -> nn.Module:
        threads = self.job.hyper.get("threads") if getattr(self, "job", None) else None
        if threads:
            torch.set_num_threads(max(int(threads), 1))
        return Pix2Pix(translator_config(config))

    def make_datasets(self, job: TrainJob):
        opts = self._data_options(job)  # crop, flips and the multiple: as for pix2pix
        self.preprocess = {"target": "percentiles 1, 99.8 to [-1, 1]"}
        try:
            train = LabelImagePairs(job.train_paths(), crop=opts["crop"],
                                    repeats=opts["repeats"], flip=opts["flip"],
                                    rot90=opts["rot90"], seed=job.seed)
            val = (LabelImagePairs(job.val_paths(), crop=None, multiple=opts["multiple"],
                                   max_items=int(job.hyper.get("val_frames", 16)))
                   if job.val_paths() else None)
        except ValueError as exc:
            raise TrainingError(f"oocyte translator training data: {exc}") from None
        return train, val

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        weight = job.hp("l1_weight")
        return {
            "architecture": "Pix2Pix (Isola et al. 2017) label map -> oocyte image (Andreini "
                            "et al. section 2.1; the S4 pix2pix)",
            "config": {"pix2pix": model.config.to_dict(),
                       "classes": {str(k): v for k, v in CLASS_NAMES.items()},
                       "preprocess": dict(self.preprocess or {}),
                       "data": {**DEFAULT_DATA, **dict(job.config.get("data", {}))},
                       "loss": {"l1_weight": 100.0 if weight is None else float(weight),
                                "gan": "bce_with_logits"}},
        }


register_task(KIND, OocyteTranslatorTask)
