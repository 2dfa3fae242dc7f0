"""Training data of the SMANet (kind ``oocyte``): dataset frames and their class maps at the
model's working size, augmented with the shared chain of :mod:`blastoseg.train.augment`.

The augmentation works on the objects (one mask per region, as the dataset stores them), so
every geometric transform moves the labels with the image; the class map is painted after
(:func:`blastoseg.io.oocyte_classes.class_map`). Frames are fitted as the predictor fits them
(:mod:`blastoseg.predict.oocyte_input`). Items: ``image`` (1, S, S) float32 in [0, 1] and
``labels`` (S, S) int64. Decoded, fitted frames are kept in memory (``cache``): decoding the
RLE masks costs more than a training step of a small network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import read_dataset
from blastoseg.io.frames import grey_frame
from blastoseg.io.oocyte_classes import class_ids_of, class_map
from blastoseg.predict.oocyte_input import fit_labels, fit_square
from blastoseg.train.augment import AugmentConfig, build_augment

__all__ = ["OocyteDataset"]


def _fit_instances(inst: FrameInstances, size: int) -> FrameInstances:
    """The objects' masks through the square fit (background padding, nearest resize)."""
    if inst.shape == (size, size) or not len(inst):
        return inst if inst.shape == (size, size) else FrameInstances.empty((size, size))
    masks = np.stack([fit_labels(m.astype(np.uint8), size) > 0 for m in inst.masks])
    return FrameInstances(masks=masks, class_ids=inst.class_ids)


class OocyteDataset(TorchDataset):
    """Frames of oocyte dataset folders with class maps (see the module docstring).

    Parameters
    ----------
    paths
        Dataset folders (categories named as the oocyte classes).
    working_size
        The model's input side.
    augment
        Augmentation strengths (None: none, e.g. validation).
    repeats
        Items per frame and epoch (each differently augmented).
    max_items
        Use only the first N frames.
    """

    def __init__(self, paths: Sequence[str | Path], working_size: int = 256, *,
                 augment: AugmentConfig | None = None, repeats: int = 1,
                 max_items: int | None = None, seed: int = 0, cache: bool = True) -> None:
        self.index: list[tuple[object, int]] = []
        self._to_class: dict[int, dict[int, int]] = {}
        for p in paths:
            ds = read_dataset(p)
            self._to_class[id(ds)] = class_ids_of(ds.categories)  # refuses non-oocyte data
            self.index += [(ds, i) for i in range(len(ds))]
        if max_items is not None:
            self.index = self.index[:max(int(max_items), 0)]
        if not self.index:
            raise ValueError(f"no frames in {', '.join(str(p) for p in paths)}")
        self.size = int(working_size)
        self.augment = build_augment(augment)
        self.repeats = max(int(repeats), 1)
        self.seed, self.epoch, self.cache = int(seed), 0, bool(cache)
        self._fitted: dict[int, tuple[np.ndarray, FrameInstances]] = {}

    def __len__(self) -> int:
        return len(self.index) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def fitted(self, k: int) -> tuple[np.ndarray, FrameInstances]:
        """Frame ``k`` at the working size (normalised) and its objects."""
        hit = self._fitted.get(k)
        if hit is not None:
            return hit
        ds, i = self.index[k]
        image, _ = fit_square(grey_frame(ds.load_image(i), min_side=8), self.size)
        inst = ds.instances(i)
        to_class = self._to_class[id(ds)]
        inst = FrameInstances(masks=inst.masks, class_ids=np.array(
            [to_class[int(c)] for c in inst.class_ids], np.int64))
        out = (image, _fit_instances(inst, self.size))
        if self.cache:
            self._fitted[k] = out
        return out

    def labels(self, k: int) -> np.ndarray:
        """Frame ``k``'s class map at the working size (no augmentation)."""
        return class_map(self.fitted(k)[1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k = index % len(self.index)
        image, inst = self.fitted(k)
        if len(self.augment.transforms):
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            image, inst = self.augment(image.copy(), inst, rng)
        labels = class_map(inst) if len(inst) else np.zeros(image.shape, np.uint8)
        return {"image": torch.from_numpy(np.ascontiguousarray(image, np.float32))[None],
                "labels": torch.from_numpy(labels.astype(np.int64))}
