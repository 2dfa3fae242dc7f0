"""Training data for the SparseSEU-Net (S4, Prytula 2023, sections 4.5.1-4.5.4): dataset
folders -> image crops with the SE-U-Net head targets, P, and the crop's amodal instances.

Each item is a dict:

- ``image`` (1, S, S) float32, normalised like the predictor does it (1st / 99.8th
  percentiles -> 0 / 1, :func:`~blastoseg.predict.overlap.normalise_percentiles`);
- ``targets`` (K, S, S) float32 (the auxiliary heads, order of ``heads``), ``present`` (K,)
  bool and ``prob`` (1, S, S) float32 (P of section 4.3): exactly as
  :class:`~blastoseg.train.overlap_data.OverlapDataset` makes them (same helpers);
- ``masks`` (G, S, S) float32: the AMODAL mask of every cell in the crop, and ``labels`` (G,)
  int64, the 0-based class index (category id - 1; category 1 = "cell" -> 0).

Interpretation / details:

- Targets and P are computed once per image from its full instance masks (a cell cut by the
  crop keeps the targets of the whole cell); instance masks are kept per image as their
  bounding-box crops (compact), and each crop keeps the in-crop part of every cell it cuts.
  A cell with fewer than ``min_area`` (16) pixels inside the crop is dropped: too little of it
  is visible to be a fair target.
- At most ``max_instances`` cells per crop (at most the model's N predictions, or the one-to-one
  matching could not cover them all): the largest in-crop parts are kept. The task sets it to
  the model's ``num_instances``; choose the crop size so that the cap is rarely reached.
- An image smaller than the crop is padded bottom/right with constants (the image with its
  median grey level, the head targets with "background", P with its smallest value, the
  masks with 0) instead of reflected: a reflected cell would be an unlabelled instance.
- Validation items (``crop=None``) are whole images reflect-padded bottom/right to a multiple
  of ``2**depth`` (as the predictor does it); their ``masks`` stay at the unpadded size
  (``size`` gives it), so predictions are cropped back before they are compared.
- Random 90-degree turns, flips and a mild gamma / gain jitter, as for the overlap model.

:func:`collate_brightfield` stacks the dense fields and keeps the instances as a list (one
``{"labels", "masks"}`` dict per image: their number differs from image to image), which is
the ``targets`` argument of :func:`blastoseg.train.sparse_losses.sparse_losses`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from blastoseg.errors import DatasetFormatError
from blastoseg.instances import flat_masks
from blastoseg.io.dataset import read_dataset
from blastoseg.targets.heads import HEADS
from blastoseg.train.overlap_data import pad_to_multiple, prepare_sample

__all__ = ["MIN_INSTANCE_AREA", "BrightfieldDataset", "collate_brightfield"]

#: cells with fewer pixels inside a crop are not training targets of that crop
MIN_INSTANCE_AREA = 16


class _Frame:
    """One dataset image prepared for training (compact dtypes; masks as box crops)."""

    __slots__ = ("boxes", "crops", "image", "labels", "present", "prob", "targets")

    def __init__(self, image, targets, present, prob, masks, labels) -> None:
        self.image = image.astype(np.float16)
        self.targets = targets.astype(np.uint8)
        self.present = present
        self.prob = prob.astype(np.float16)
        self.boxes: list[tuple[int, int]] = []
        self.crops: list[np.ndarray] = []
        keep = []
        for k, m in enumerate(masks):
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if not len(rows):
                continue
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            self.boxes.append((int(y0), int(x0)))
            self.crops.append(np.ascontiguousarray(m[y0:y1, x0:x1]))
            keep.append(k)
        self.labels = np.asarray(labels, np.int64)[keep]

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape

    def masks_in(self, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(G, h, w) bool masks and (G,) labels of the cells seen in the window (all cells,
        empty ones included; the caller filters)."""
        out = np.zeros((len(self.crops), h, w), bool)
        for k, ((by, bx), crop) in enumerate(zip(self.boxes, self.crops, strict=True)):
            ch, cw = crop.shape
            ty0, ty1 = max(by, y), min(by + ch, y + h)
            tx0, tx1 = max(bx, x), min(bx + cw, x + w)
            if ty0 < ty1 and tx0 < tx1:
                out[k, ty0 - y:ty1 - y, tx0 - x:tx1 - x] = crop[ty0 - by:ty1 - by,
                                                                tx0 - bx:tx1 - bx]
        return out, self.labels


def _pad_constant(array: np.ndarray, h: int, w: int, value) -> np.ndarray:
    """Pad the last two axes bottom/right to at least (h, w) with ``value`` (a scalar, or one
    value per leading channel)."""
    ph, pw = max(h - array.shape[-2], 0), max(w - array.shape[-1], 0)
    if not ph and not pw:
        return array
    out = np.empty((*array.shape[:-2], array.shape[-2] + ph, array.shape[-1] + pw),
                   array.dtype)
    values = np.asarray(value, array.dtype)
    out[...] = values.reshape(values.shape + (1, 1)) if values.ndim else values
    out[..., :array.shape[-2], :array.shape[-1]] = array
    return out


class BrightfieldDataset(TorchDataset):
    """SparseSEU-Net training items from dataset folders (amodal instance masks per crop).

    Parameters
    ----------
    paths
        Dataset folders (category ids 1..K become class indices 0..K-1).
    heads
        The SE-U-Net's auxiliary heads to produce targets for (order kept).
    crop
        Side of the square crops (a multiple of ``multiple``); ``None`` gives whole images
        reflect-padded to ``multiple`` (validation).
    probability
        ``{"variant": name, **params}`` for :func:`probability_map`, or variant
        ``"from_dataset"`` (the exported P of each image).
    augment
        Random crops, flips, turns and gamma; False gives the top-left crop, unchanged.
    repeats
        Items per image and epoch.
    multiple
        The network's ``2**depth`` (validation images are padded to it).
    scale
        Resize factor applied to each image and its masks first (the model's resolution; the
        predictor applies the same factor, read from the model card).
    max_instances
        Cap on the cells of one crop (the largest in-crop parts are kept).
    min_area
        Cells with fewer pixels inside the crop are dropped from it.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], heads: Sequence[str] = HEADS, *,
                 crop: int | None = 256, probability: dict | None = None, augment: bool = True,
                 repeats: int = 1, multiple: int = 16, border_width: int = 2, seed: int = 0,
                 max_images: int | None = None, scale: float = 1.0, max_instances: int = 100,
                 min_area: int = MIN_INSTANCE_AREA) -> None:
        self.heads = tuple(heads)
        self.crop = None if crop is None else int(crop)
        self.augment = augment
        self.repeats = max(int(repeats), 1)
        self.multiple = int(multiple)
        self.max_instances = max(int(max_instances), 1)
        self.min_area = max(int(min_area), 1)
        self.seed, self.epoch = int(seed), 0
        prob = dict(probability or {"variant": "none"})
        variant = prob.pop("variant", "none")
        self.frames: list[_Frame] = []
        for path in paths:
            ds = read_dataset(path)
            for i in range(len(ds)):
                if max_images is not None and len(self.frames) >= max_images:
                    break
                inst = ds.instances(i)
                if len(inst) and inst.class_ids.min() < 1:
                    raise DatasetFormatError(
                        f"{ds.path}: image {ds.images[i]['file_name']!r} has category id "
                        f"{int(inst.class_ids.min())}; category ids must start at 1")
                image, inst, stack, present, p = prepare_sample(
                    ds, i, self.heads, scale=scale, border_width=border_width,
                    variant=variant, params=prob, inst=inst)
                self.frames.append(_Frame(image, stack, present, p, inst.masks,
                                          inst.class_ids - 1))

    def __len__(self) -> int:
        return len(self.frames) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: new crops and augmentation draws."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        # a function of (seed, epoch, item) alone, never of the items drawn before: a resumed
        # run, and any DataLoader worker, draws what an uninterrupted run draws (issue 18)
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    @property
    def num_classes(self) -> int:
        """1 + the largest class index in the data (0 without any instance)."""
        labels = [int(f.labels.max()) for f in self.frames if len(f.labels)]
        return max(labels) + 1 if labels else 0

    def _fill_values(self, image: np.ndarray, prob: np.ndarray) -> tuple:
        target_fill = [1.0 if h == "background" else 0.0 for h in self.heads]
        return float(np.median(image)), target_fill, float(prob.min())

    def _window(self, frame: _Frame, rng: np.random.Generator) -> dict[str, np.ndarray]:
        image = frame.image.astype(np.float32)
        targets = frame.targets.astype(np.float32)
        prob = frame.prob.astype(np.float32)
        h, w = image.shape
        if self.crop is None:
            masks, labels = frame.masks_in(0, 0, h, w)
            return {"image": pad_to_multiple(image, self.multiple),
                    "targets": pad_to_multiple(targets, self.multiple),
                    "prob": pad_to_multiple(prob, self.multiple), "masks": masks,
                    "labels": labels}
        s = self.crop
        if h < s or w < s:
            img_fill, target_fill, prob_fill = self._fill_values(image, prob)
            image = _pad_constant(image, s, s, img_fill)
            targets = _pad_constant(targets, s, s, target_fill)
            prob = _pad_constant(prob, s, s, prob_fill)
        ph, pw = image.shape
        y = int(rng.integers(0, ph - s + 1)) if self.augment else 0
        x = int(rng.integers(0, pw - s + 1)) if self.augment else 0
        win = (slice(y, y + s), slice(x, x + s))
        masks, labels = frame.masks_in(y, x, s, s)
        return {"image": image[win], "targets": targets[(slice(None), *win)],
                "prob": prob[win], "masks": masks, "labels": labels}

    def _select(self, masks: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drop cells under ``min_area`` in the window; keep the largest ``max_instances``."""
        if self.crop is None:  # validation: every cell of the image
            return masks, labels
        areas = flat_masks(masks).sum(axis=1)
        keep = np.flatnonzero(areas >= self.min_area)
        if len(keep) > self.max_instances:
            keep = keep[np.argsort(-areas[keep], kind="stable")[:self.max_instances]]
            keep.sort()
        return masks[keep], labels[keep]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frame = self.frames[index % len(self.frames)]
        rng = self._rng(index)
        win = self._window(frame, rng)
        size = frame.shape
        masks, labels = self._select(win["masks"], win["labels"])
        image, targets, prob = win["image"], win["targets"], win["prob"]
        if self.augment:
            k = int(rng.integers(0, 4))
            flip = bool(rng.integers(0, 2))
            image, prob = np.rot90(image, k), np.rot90(prob, k)
            targets = np.rot90(targets, k, axes=(1, 2))
            masks = np.rot90(masks, k, axes=(1, 2))
            if flip:
                image, prob = image[:, ::-1], prob[:, ::-1]
                targets, masks = targets[:, :, ::-1], masks[:, :, ::-1]
            image = np.clip(image, 0, None) ** float(np.exp(rng.normal(0, 0.2)))
            image = image * float(rng.uniform(0.85, 1.15))
        if self.crop is not None:
            size = image.shape
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, np.float32))[None],
            "targets": torch.from_numpy(np.ascontiguousarray(targets, np.float32)),
            "present": torch.from_numpy(frame.present.copy()),
            "prob": torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None],
            "masks": torch.from_numpy(np.ascontiguousarray(masks, np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(labels, np.int64)),
            "size": torch.tensor(size, dtype=torch.int64),
        }


def collate_brightfield(samples: list[dict]) -> dict:
    """Stack the dense fields of items of one size; keep the instances per image:
    ``batch["instances"] = [{"labels": (G_i,), "masks": (G_i, S, S)}, ...]``."""
    dense = ("image", "targets", "present", "prob", "size")
    batch = {k: torch.stack([s[k] for s in samples]) for k in dense}
    batch["instances"] = [{"labels": s["labels"], "masks": s["masks"]} for s in samples]
    return batch
