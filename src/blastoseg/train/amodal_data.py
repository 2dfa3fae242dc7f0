"""Training data for the amodal detector (S1): dataset folders and on-the-fly synthetic embryos,
framed exactly as the predictor frames them, augmented, as torchvision detection targets.

Each item is ``(image (1, S, S) float32, target)`` with ``target`` holding

- ``boxes`` (N, 4) float32 amodal XYXY boxes, ``labels`` (N,) int64 (1 = blastomere),
- ``masks`` (N, S, S) uint8 amodal masks, ``occlusion`` (S, S) float32 (coverage >= 2),
- ``visible_masks`` (N, S, S) uint8 when the source has them,
- ``image_id`` int64 (the item's index), ``track_ids`` (N,) int64 when known.

Framing: :func:`~blastoseg.predict.localise.choose_embryo_box` on the raw frame (no ground
truth, so training sees the same crops as inference), :func:`~blastoseg.predict.framing.frame_for_model`
to the working size, then the instances are resampled with the same :class:`Framing`.

Synthetic frames: ``synth_per_epoch`` frames per epoch from
:func:`~blastoseg.synth.render_embryo` with 1..``max_cells`` cells; each frame's seed derives
from ``(seed, epoch, index)``, so a run is reproducible and no frame repeats between epochs
(call :meth:`AmodalDataset.set_epoch` at the start of every epoch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import Dataset, read_dataset
from blastoseg.predict.embryo_box import EmbryoBox
from blastoseg.predict.framing import DEFAULT_MARGIN, frame_for_model
from blastoseg.predict.localise import choose_embryo_box
from blastoseg.train.augment import AugmentConfig, build_augment

__all__ = ["AmodalDataset", "collate_detection", "make_target"]


def _synth_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit render seed unique to (seed, epoch, index)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index), 0x5EED]).generate_state(
        1, np.uint64)
    return int(state[0] >> np.uint64(1))


def make_target(inst: FrameInstances, image_id: int, min_box_size: float = 2.0) -> dict:
    """torchvision detection target from instances in model coordinates.

    Instances whose amodal box is narrower or shorter than ``min_box_size`` px are dropped;
    the occlusion map is computed from the instances kept.
    """
    h, w = inst.shape
    boxes = inst.boxes
    if len(inst):
        keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) >= min_box_size)
        if not keep.all():
            inst = inst.select(keep)
            boxes = boxes[keep]
    n = len(inst)
    target = {
        "boxes": torch.as_tensor(boxes.reshape(n, 4), dtype=torch.float32),
        "labels": torch.ones(n, dtype=torch.int64),
        "masks": torch.from_numpy(inst.masks.astype(np.uint8).reshape(n, h, w)),
        "occlusion": torch.from_numpy((inst.masks.sum(axis=0) >= 2).astype(np.float32)
                                      if n else np.zeros((h, w), np.float32)),
        "image_id": torch.tensor(int(image_id), dtype=torch.int64),
    }
    if inst.visible_masks is not None:
        target["visible_masks"] = torch.from_numpy(
            inst.visible_masks.astype(np.uint8).reshape(n, h, w))
    if inst.track_ids is not None:
        target["track_ids"] = torch.as_tensor(inst.track_ids, dtype=torch.int64)
    return target


class AmodalDataset(TorchDataset):
    """Framed, augmented frames for amodal instance segmentation.

    Parameters
    ----------
    sources
        Dataset folders (paths) or opened :class:`~blastoseg.io.dataset.Dataset` objects; may
        be empty when ``synth_per_epoch`` > 0.
    working_size
        Side S of the model input.
    augment
        :class:`AugmentConfig`, or None for no augmentation.
    synth_per_epoch
        Synthetic frames rendered on the fly per epoch (appended after the real frames).
    seed
        Seeds synthetic frames and augmentation (with the epoch and the item index).
    use_localisation
        Frame around :func:`~blastoseg.predict.localise.locate_embryo` (as the predictor
        does); False resizes the whole frame.
    margin
        Crop half side = (1 + margin) x embryo radius.
    max_cells
        Synthetic frames have 1..max_cells blastomeres, uniformly.
    synth_config
        :class:`~blastoseg.synth.EmbryoConfig` of the synthetic frames (default: the
        generator's default, 500 x 500 px; smaller frames render faster).
    min_box_size
        Instances with an amodal box narrower/shorter than this (px, after framing) are dropped.
    min_confidence
        Localisation below this confidence falls back to the whole frame.
    framing_jitter
        When > 0, frames whose dataset entry (or synthetic render) carries the labelled
        ``embryo_circle`` are framed around that circle, its centre moved by up to
        ``framing_jitter`` x r and its radius scaled by up to 1 +- ``framing_jitter`` (drawn
        per epoch): the model learns the embryo at the framing a good localiser or a user's
        circle gives, with the localiser's typical error, instead of learning from the
        localiser's failures on incubator full frames. 0 (the default) frames every frame
        with the localiser, exactly as inference does.
    """

    def __init__(self, sources: str | os.PathLike | Dataset | Sequence | None = (),
                 working_size: int = 256, augment: AugmentConfig | None = None,
                 synth_per_epoch: int = 0, seed: int = 0, use_localisation: bool = True,
                 margin: float = DEFAULT_MARGIN, max_cells: int = 8, synth_config=None,
                 min_box_size: float = 2.0, min_confidence: float = 0.15,
                 framing_jitter: float = 0.0) -> None:
        if sources is None:
            sources = ()
        if isinstance(sources, (str, os.PathLike, Dataset)):
            sources = [sources]
        self.datasets: list[Dataset] = [s if isinstance(s, Dataset) else read_dataset(s)
                                        for s in sources]
        self.index: list[tuple[int, int]] = [(d, i) for d, ds in enumerate(self.datasets)
                                             for i in range(len(ds))]
        if int(synth_per_epoch) < 0:
            raise ValueError(f"synth_per_epoch must be >= 0; got {synth_per_epoch}")
        if not 1 <= int(max_cells) <= 16:
            raise ValueError(f"max_cells must be 1..16; got {max_cells}")
        self.working_size = int(working_size)
        self.augment_config = augment
        self._augment = build_augment(augment)
        self.synth_per_epoch = int(synth_per_epoch)
        self.seed = int(seed)
        self.use_localisation = bool(use_localisation)
        self.margin = float(margin)
        self.max_cells = int(max_cells)
        self.synth_config = synth_config
        self.min_box_size = float(min_box_size)
        self.min_confidence = float(min_confidence)
        if not 0.0 <= float(framing_jitter) < 0.5:
            raise ValueError(f"framing_jitter must be in [0, 0.5); got {framing_jitter}")
        self.framing_jitter = float(framing_jitter)
        self.epoch = 0
        if len(self) == 0:
            raise ValueError("AmodalDataset has no frames: give dataset folders with images "
                             "or synth_per_epoch > 0")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: new synthetic frames and new augmentation draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index) + self.synth_per_epoch

    def raw(self, i: int) -> tuple[np.ndarray, FrameInstances, dict]:
        """The unframed frame ``i``: image as stored, instances, and where it came from."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        if i < len(self.index):
            d, k = self.index[i]
            ds = self.datasets[d]
            info = {"source": str(ds.root), "index": k}
            circle = ds.extra(k).get("embryo_circle")
            if circle is not None:
                info["embryo_circle"] = [float(v) for v in circle]
            return ds.load_image(k), ds.instances(k), info
        from blastoseg.synth import render_embryo

        j = i - len(self.index)
        s = _synth_seed(self.seed, self.epoch, j)
        n_cells = int(np.random.default_rng(s).integers(1, self.max_cells + 1))
        frame = render_embryo(n_cells, seed=s, config=self.synth_config)
        info = {"source": "synthetic", "seed": s, "n_cells": n_cells}
        if frame.meta.get("embryo_circle") is not None:
            info["embryo_circle"] = [float(v) for v in frame.meta["embryo_circle"]]
        return frame.image, frame.instances, info

    def framed(self, i: int) -> tuple[np.ndarray, FrameInstances, dict]:
        """Frame ``i`` cropped and rescaled as the predictor would, before augmentation."""
        image, inst, info = self.raw(i)
        circle = info.get("embryo_circle")
        if self.framing_jitter > 0 and circle is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(i), 2])
            cx, cy, r = circle
            j = self.framing_jitter
            ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, j) * r
            box = EmbryoBox.from_circle(cx + dist * np.cos(ang), cy + dist * np.sin(ang),
                                        r * rng.uniform(1 - j, 1 + j), np.shape(image)[:2])
        else:
            box = choose_embryo_box(image, use_localisation=self.use_localisation,
                                    min_confidence=self.min_confidence)
        crop, framing = frame_for_model(image, box, self.working_size, self.margin)
        info = {**info, "framing": framing.to_dict(), "box": box.to_dict()}
        return crop, framing.instances_to_model(inst), info

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        crop, inst, _ = self.framed(i)
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 1])
        crop, inst = self._augment(crop, inst, rng)
        inst = replace(inst, class_ids=np.ones(len(inst), dtype=np.int64))
        image = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None]
        return image, make_target(inst, i, self.min_box_size)


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]
                      ) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch for torchvision detection models: (list of images, list of targets)."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets
