"""Training data for the SE-U-Net overlap model (S4): dataset folders -> normalised image
crops, per-head targets and the overlap-aware probability map P of each crop.

Each item is a dict of tensors:

- ``image`` (1, S, S) float32, the frame normalised like the predictor does it
  (:func:`~blastoseg.predict.overlap.normalise_percentiles`: 1st / 99.8th percentiles
  -> 0 / 1);
- ``targets`` (K, S, S) float32 in the order of ``heads`` and ``present`` (K,) bool: False
  where the source has no ground truth for a head (no nuclei files: the nuclei loss is
  skipped for that sample);
- ``prob`` (1, S, S) float32, P of section 4.3 (the same function as the preview widget).

Targets and P are computed once per image from its full instance masks (P of a cell cut by
the crop must not change with the crop) and kept as uint8 / float16 to bound memory; crops,
flips, 90-degree turns and a mild gamma jitter are drawn per item.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from blastoseg.errors import DatasetFormatError
from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import read_dataset
from blastoseg.io.images import read_image
from blastoseg.io.nuclei import load_nuclei
from blastoseg.predict.framing import to_grey
from blastoseg.predict.overlap import normalise_percentiles, resize_map
from blastoseg.targets.heads import HEADS, head_targets
from blastoseg.targets.probability import probability_map

__all__ = ["FROM_DATASET", "OverlapDataset", "pad_to_multiple"]

#: probability "variant" that reads each image's exported P (``probability_file``, written by
#: the preview widget's export) instead of computing it
FROM_DATASET = "from_dataset"


def _stored_probability(ds, i: int, shape: tuple[int, int]) -> np.ndarray:
    name = ds.extra(i).get("probability_file")
    if not name:
        raise DatasetFormatError(
            f"{ds.path}: image {ds.images[i]['file_name']!r} has no probability_file; export "
            f"P with the preview widget (or choose a computed variant in the config)")
    p = read_image(ds.root / name).astype(np.float32)
    if p.shape != tuple(shape):
        raise DatasetFormatError(f"{ds.root / name}: P is {p.shape}, the image {tuple(shape)}")
    return p


def pad_to_multiple(array: np.ndarray, multiple: int, minimum: int = 0) -> np.ndarray:
    """Reflect-pad the last two axes up to a multiple of ``multiple`` (and at least
    ``minimum``); bottom/right only, so the top-left pixels keep their coordinates."""
    h, w = array.shape[-2:]
    th = max(-(-h // multiple) * multiple, minimum)
    tw = max(-(-w // multiple) * multiple, minimum)
    if (th, tw) == (h, w):
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, th - h), (0, tw - w)]
    mode = "reflect" if h > 1 and w > 1 and th - h < h and tw - w < w else "constant"
    return np.pad(array, pad, mode=mode)


def rescale_sample(image: np.ndarray, inst: FrameInstances, nuclei: np.ndarray | None,
                   scale: float) -> tuple[np.ndarray, FrameInstances, np.ndarray | None]:
    """Image, amodal masks and nuclei resized by ``scale`` (masks by area > 0.5), so the
    targets and P are built at the model's resolution (border bands keep their width)."""
    h, w = image.shape
    shape = (max(round(h * scale), 8), max(round(w * scale), 8))
    small = resize_map(image, shape)

    def masks(stack: np.ndarray) -> np.ndarray:
        return np.stack([resize_map(m.astype(np.float32), shape) > 0.5 for m in stack]) \
            if len(stack) else np.zeros((0, *shape), bool)

    keep = masks(inst.masks)
    nonempty = keep.reshape(len(keep), -1).any(axis=1) if len(keep) else np.zeros(0, bool)
    inst = FrameInstances(masks=keep[nonempty], class_ids=inst.class_ids[nonempty])
    nuc = None if nuclei is None else resize_map(nuclei.astype(np.float32), shape) > 0.5
    return small, inst, nuc


def prepare_sample(ds, i: int, heads, *, scale: float = 1.0, border_width: int = 2,
                   variant: str = "none", params: dict | None = None, inst=None):
    """Dataset image ``i`` as the SE-U-Net trains on it: the normalised image (at ``scale``),
    its instances, the (K, H, W) head targets with their presence flags, and P.

    Shared by the overlap and brightfield training data; ``inst`` lets the caller pass the
    instances it has already read (and checked)."""
    image = normalise_percentiles(to_grey(ds.load_image(i)))
    inst = ds.instances(i) if inst is None else inst
    nuclei = load_nuclei(ds, i)
    if scale != 1.0:
        image, inst, nuclei = rescale_sample(image, inst, nuclei, scale)
    t = head_targets(inst, nuclei, border_width=border_width, heads=heads)
    stack = np.zeros((len(heads), *image.shape), np.float32)
    present = np.zeros(len(heads), bool)
    for k, h in enumerate(heads):
        if h in t:
            stack[k], present[k] = t[h], True
    if variant == FROM_DATASET:
        p = _stored_probability(ds, i, image.shape)
    else:
        p = probability_map(inst, variant, nuclei=nuclei, **(params or {}))
    return image, inst, stack, present, p


class _Frame:
    """One dataset image prepared for training (compact dtypes)."""

    __slots__ = ("image", "prob", "targets", "present")

    def __init__(self, image, targets, present, prob) -> None:
        self.image = image.astype(np.float16)
        self.targets = targets.astype(np.uint8)
        self.present = present
        self.prob = prob.astype(np.float16)


class OverlapDataset(TorchDataset):
    """SE-U-Net training items from dataset folders.

    Parameters
    ----------
    paths
        Dataset folders.
    heads
        Heads to produce targets for (a subset of :data:`HEADS`, order kept).
    crop
        Side of the square crops; ``None`` gives whole images padded to ``multiple``
        (validation).
    probability
        ``{"variant": name, **params}`` for :func:`probability_map`.
    augment
        Random crops, flips, turns and gamma; False gives the top-left crop, unchanged.
    repeats
        Items per image and epoch (crops are random, so an image can give several).
    scale
        Resize factor applied to each image and its masks before targets and P are made
        (the predictor applies the same factor, read from the model card).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], heads: Sequence[str] = HEADS, *,
                 crop: int | None = 256, probability: dict | None = None, augment: bool = True,
                 repeats: int = 1, multiple: int = 16, border_width: int = 2, seed: int = 0,
                 max_images: int | None = None, scale: float = 1.0) -> None:
        self.heads = tuple(heads)
        self.crop = crop
        self.augment = augment
        self.repeats = max(int(repeats), 1)
        self.multiple = multiple
        self.seed, self.epoch = int(seed), 0
        prob = dict(probability or {"variant": "none"})
        variant = prob.pop("variant", "none")
        self.frames: list[_Frame] = []
        for path in paths:
            ds = read_dataset(path)
            for i in range(len(ds)):
                if max_images is not None and len(self.frames) >= max_images:
                    break
                image, _, stack, present, p = prepare_sample(
                    ds, i, self.heads, scale=scale, border_width=border_width,
                    variant=variant, params=prob)
                self.frames.append(_Frame(image, stack, present, p))

    def __len__(self) -> int:
        return len(self.frames) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: new crops and augmentation draws."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        # a function of (seed, epoch, item) alone, never of the items drawn before: a resumed
        # run, and any DataLoader worker, draws what an uninterrupted run draws (issue 18)
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _window(self, frame: _Frame, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = frame.image.astype(np.float32)
        targets = frame.targets.astype(np.float32)
        prob = frame.prob.astype(np.float32)
        if self.crop is None:
            return (pad_to_multiple(image, self.multiple), pad_to_multiple(targets, self.multiple),
                    pad_to_multiple(prob, self.multiple))
        s = self.crop
        image, targets, prob = (pad_to_multiple(a, 1, minimum=s) for a in (image, targets, prob))
        h, w = image.shape
        y = int(rng.integers(0, h - s + 1)) if self.augment else 0
        x = int(rng.integers(0, w - s + 1)) if self.augment else 0
        win = (slice(y, y + s), slice(x, x + s))
        return image[win], targets[(slice(None), *win)], prob[win]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frame = self.frames[index % len(self.frames)]
        rng = self._rng(index)
        image, targets, prob = self._window(frame, rng)
        if self.augment:
            k = int(rng.integers(0, 4))
            flip = bool(rng.integers(0, 2))
            image, prob = np.rot90(image, k), np.rot90(prob, k)
            targets = np.rot90(targets, k, axes=(1, 2))
            if flip:
                image, prob, targets = image[:, ::-1], prob[:, ::-1], targets[:, :, ::-1]
            # mild contrast variation: real clinics' microscopes differ in gamma and gain
            image = np.clip(image, 0, None) ** float(np.exp(rng.normal(0, 0.2)))
            image = image * float(rng.uniform(0.85, 1.15))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, np.float32))[None],
            "targets": torch.from_numpy(np.ascontiguousarray(targets, np.float32)),
            "present": torch.from_numpy(frame.present.copy()),
            "prob": torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None],
        }
