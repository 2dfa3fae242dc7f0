"""Training data for Cell-Net (kind ``count``): frames framed exactly as the amodal detector
frames them, augmented, with the shape-aware density target of S2 section IV.A.

The framing, the synthetic frames and the augmentation are those of
:class:`blastoseg.train.amodal_data.AmodalDataset` (this class extends it): the embryo is
localised on the raw frame (:func:`~blastoseg.predict.localise.choose_embryo_box`), the square
around it is resized to the working size, and the amodal masks follow the same
:class:`~blastoseg.predict.framing.Framing` and the same geometric augmentation. The density
target is then made from the augmented amodal masks (:func:`blastoseg.targets.density.density_map`),
so it always matches the image.

Each item is a dict: ``image`` (1, S, S) float32, ``density`` (1, S, S) float32 (integral =
number of cells), ``count`` () float32. :meth:`CountDataset.item_with_centroids` also gives
the true centroids for validation.

Framing a frame (localisation and mask resampling) costs far more than a training step of a
small network on a 2-core CPU, so framed dataset frames are kept in memory (``cache=True``,
about 0.5 MB per frame at 192 px: the float32 crop and the masks); synthetic frames are new
every epoch and never cached. The cache changes speed only, never an item. With DataLoader
workers (hyper ``num_workers``) each worker fills its own copy, which is dropped at the end of
the epoch: every epoch frames its frames again.
"""

from __future__ import annotations

import numpy as np
import torch

from blastoseg.instances import FrameInstances
from blastoseg.targets.density import DEFAULT_SIGMA_RATIO, density_map
from blastoseg.train.amodal_data import AmodalDataset

__all__ = ["CountDataset"]


class CountDataset(AmodalDataset):
    """Framed, augmented frames with density targets (see the module docstring).

    Parameters are those of :class:`~blastoseg.train.amodal_data.AmodalDataset`, plus
    ``sigma_ratio`` (dot axes / fitted ellipse semi-axes), ``cache`` (keep framed dataset
    frames in memory) and ``max_items`` (use only the first N frames, e.g. for validation).
    """

    def __init__(self, *args, sigma_ratio: float = DEFAULT_SIGMA_RATIO, cache: bool = True,
                 max_items: int | None = None, **kwargs) -> None:
        self.max_items = None if max_items is None else max(int(max_items), 0)
        super().__init__(*args, **kwargs)
        if not sigma_ratio > 0:
            raise ValueError(f"sigma_ratio must be > 0, got {sigma_ratio!r}")
        self.sigma_ratio = float(sigma_ratio)
        self.cache = bool(cache) and self.framing_jitter == 0
        self._framed: dict[int, tuple[np.ndarray, FrameInstances]] = {}

    def __len__(self) -> int:
        n = super().__len__()
        return n if self.max_items is None else min(n, self.max_items)

    def _framed_cached(self, i: int) -> tuple[np.ndarray, FrameInstances]:
        # the cache keeps the float32 crop as framed: a cached frame is the very frame (it
        # used to be kept as float16, so a frame's first use differed from its later ones and
        # a resumed run, whose cache starts empty, from the uninterrupted run; issue 18)
        hit = self._framed.get(i)
        if hit is None:
            crop, inst, _ = self.framed(i)
            hit = (crop, inst)
            if self.cache and i < len(self.index):  # dataset frames only: synthetic ones change
                self._framed[i] = hit
        return hit[0].copy(), hit[1]

    def item_with_centroids(self, i: int) -> tuple[dict, np.ndarray]:
        """Item ``i`` and its true (N, 2) (y, x) centroids in working pixels."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        crop, inst = self._framed_cached(i)
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 1])
        crop, inst = self._augment(crop, inst, rng)
        density, centroids = density_map(inst.masks, self.sigma_ratio)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None],
            "density": torch.from_numpy(density)[None],
            "count": torch.tensor(float(len(centroids)), dtype=torch.float32),
        }
        return item, centroids

    def __getitem__(self, i: int) -> dict:
        return self.item_with_centroids(i)[0]
