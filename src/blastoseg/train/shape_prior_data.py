"""Amodal-mask crops for training the VQ-VAE shape prior (S1, Jang et al., section 3).

Every amodal mask is cropped to its box and resampled to S x S with ``roi_align`` (bilinear,
the way torchvision's Mask R-CNN projects target masks onto RoIs), then thresholded at 0.5.
Augmentation imitates imperfect detector boxes and the orientation freedom of a cell: a
small random padding / jitter of each box side, a slight scale change, flips and 90-degree
rotations.

Sources: masks in memory (:meth:`MaskCropDataset.from_masks`), dataset folders in the
blastoseg format (:meth:`MaskCropDataset.from_dataset`), frames of the synthetic embryo
generator (:meth:`MaskCropDataset.from_synthetic`), or an endless on-the-fly generator
(:class:`SyntheticMaskCrops`). :func:`random_blob_masks` draws hand-made irregular ellipses
(for tests and quick experiments that need no generator).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from torchvision.ops import roi_align

__all__ = [
    "CropAugment",
    "MaskCropDataset",
    "SyntheticMaskCrops",
    "crop_mask",
    "random_blob_masks",
]


def crop_mask(mask: np.ndarray | torch.Tensor, box: Sequence[float], size: int) -> torch.Tensor:
    """Resample ``mask`` inside ``box`` to a ``size`` x ``size`` bool tensor.

    Parameters
    ----------
    mask
        (H, W) bool or float mask.
    box
        XYXY in pixel edges (x2, y2 exclusive; :attr:`FrameInstances.boxes`). May extend
        beyond the mask; outside counts as background.
    size
        Output side S.

    Returns
    -------
    torch.Tensor
        (S, S) bool: bilinear ``roi_align`` (pixel-exact, ``aligned=True``) thresholded at 0.5.
    """
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    m = m.to(torch.float32)[None, None]
    rois = torch.tensor([[0.0, *map(float, box)]], dtype=torch.float32)
    out = roi_align(m, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return out[0, 0] >= 0.5


@dataclass
class CropAugment:
    """Random changes of a crop; fractions are of the box's width / height.

    Attributes
    ----------
    pad
        Each side moves outwards by ``U(0, pad)`` (detector boxes are rarely tight).
    jitter
        Each side additionally moves by ``U(-jitter, jitter)`` (may cut the mask a little).
    scale
        The box is scaled about its centre by ``U(1 - scale, 1 + scale)``.
    flips, rot90
        Random horizontal / vertical flips and 90-degree rotations.
    """

    pad: float = 0.08
    jitter: float = 0.03
    scale: float = 0.05
    flips: bool = True
    rot90: bool = True

    def box(self, box: np.ndarray, gen: torch.Generator | None = None) -> np.ndarray:
        x0, y0, x1, y1 = (float(v) for v in box)
        w, h = x1 - x0, y1 - y0
        u = torch.rand(9, generator=gen).numpy().astype(np.float64)
        size = np.array([w, h, w, h])
        out = np.array([x0, y0, x1, y1])
        sign = np.array([-1.0, -1.0, 1.0, 1.0])
        out = out + sign * u[:4] * self.pad * size + (2 * u[4:8] - 1) * self.jitter * size
        s = 1.0 + (2 * u[8] - 1) * self.scale
        cx, cy = (out[0] + out[2]) / 2, (out[1] + out[3]) / 2
        hw, hh = max((out[2] - out[0]) * s / 2, 0.5), max((out[3] - out[1]) * s / 2, 0.5)
        return np.array([cx - hw, cy - hh, cx + hw, cy + hh])

    def orient(self, crop: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        r = torch.randint(0, 8, (1,), generator=gen).item()
        if self.flips and r & 1:
            crop = crop.flip(-1)
        if self.flips and r & 2:
            crop = crop.flip(-2)
        if self.rot90 and r & 4:
            crop = crop.transpose(-1, -2)  # with the flips: all 8 symmetries of the square
        return crop


def _tight_crop(mask: np.ndarray, margin: float = 0.3) -> tuple[np.ndarray, np.ndarray] | None:
    """Cut ``mask`` to its box plus a margin (room for augmentation); None when empty."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad = int(math.ceil(margin * max(y1 - y0, x1 - x0))) + 1
    h, w = mask.shape
    cy0, cy1, cx0, cx1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
    crop = np.ascontiguousarray(mask[cy0:cy1, cx0:cx1], dtype=bool)
    box = np.array([x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0], dtype=np.float64)
    return crop, box


class MaskCropDataset(Dataset):
    """Amodal mask crops, each an item ``(1, S, S)`` float32 tensor of 0 and 1.

    Parameters
    ----------
    masks
        Full-frame (H, W) bool amodal masks (empty ones are skipped). Only each mask's box
        plus a margin is kept in memory.
    size
        S, the crop side (the VQ-VAE's ``mask_size``).
    augment
        A :class:`CropAugment`, or None for exact box crops (evaluation). Random draws use
        torch's global generator (seeded per DataLoader worker by torch).
    min_area
        Masks with fewer pixels are skipped (specks the shape prior should not learn).
    """

    def __init__(self, masks: Iterable[np.ndarray], size: int = 28,
                 augment: CropAugment | None = None, min_area: int = 16) -> None:
        self.size = int(size)
        self.augment = augment
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        for m in masks:
            m = np.asarray(m, dtype=bool)
            if m.ndim != 2:
                raise ValueError(f"each mask must be (H, W); got shape {m.shape}")
            if m.sum() < min_area:
                continue
            cut = _tight_crop(m)
            if cut is not None:
                self.items.append(cut)

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def from_masks(cls, masks: Iterable[np.ndarray], **kwargs) -> MaskCropDataset:
        """From (H, W) masks or (N, H, W) stacks of them."""
        def flat() -> Iterator[np.ndarray]:
            for m in masks:
                m = np.asarray(m)
                yield from (m if m.ndim == 3 else [m])
        return cls(flat(), **kwargs)

    @classmethod
    def from_dataset(cls, folders: str | os.PathLike | Sequence[str | os.PathLike],
                     **kwargs) -> MaskCropDataset:
        """From one or more dataset folders in the blastoseg format (amodal masks)."""
        from blastoseg.io.dataset import read_dataset

        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]

        def masks() -> Iterator[np.ndarray]:
            for folder in folders:
                ds = read_dataset(folder)
                for i in range(len(ds)):
                    yield from ds.instances(i).masks
        return cls(masks(), **kwargs)

    @classmethod
    def from_synthetic(cls, n_frames: int, seed: int = 0, n_cells: tuple[int, int] = (1, 16),
                       config=None, **kwargs) -> MaskCropDataset:
        """Render ``n_frames`` synthetic embryos (seeds ``seed .. seed + n_frames - 1``)."""
        from blastoseg.synth import render_embryo

        rng = np.random.default_rng(seed)
        counts = rng.integers(n_cells[0], n_cells[1] + 1, size=n_frames)

        def masks() -> Iterator[np.ndarray]:
            for k, n in enumerate(counts):
                yield from render_embryo(int(n), seed=seed + k, config=config).instances.masks
        return cls(masks(), **kwargs)

    # --- Dataset ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        crop, box = self.items[i]
        return _make_crop(crop, box, self.size, self.augment)

    def tensor(self) -> torch.Tensor:
        """All items stacked as (N, 1, S, S) float32 (augmented if ``augment`` is set)."""
        if not self.items:
            return torch.zeros(0, 1, self.size, self.size)
        return torch.stack([self[i] for i in range(len(self))])


def _make_crop(crop: np.ndarray, box: np.ndarray, size: int,
               augment: CropAugment | None, gen: torch.Generator | None = None
               ) -> torch.Tensor:
    if augment is not None:
        box = augment.box(box, gen)
    out = crop_mask(crop, box, size)
    if augment is not None:
        out = augment.orient(out, gen)
    return out[None].to(torch.float32)


class SyntheticMaskCrops(IterableDataset):
    """Endless amodal crops rendered on the fly by :func:`blastoseg.synth.render_embryo`.

    Each DataLoader worker renders its own embryos (seeds ``seed + worker + k * n_workers``),
    so workers never repeat each other. Items are ``(1, S, S)`` float32 tensors.
    """

    def __init__(self, size: int = 28, seed: int = 0, n_cells: tuple[int, int] = (1, 16),
                 config=None, augment: CropAugment | None = None, min_area: int = 16) -> None:
        self.size, self.seed, self.n_cells = int(size), int(seed), n_cells
        self.config, self.augment, self.min_area = config, augment, min_area

    def __iter__(self) -> Iterator[torch.Tensor]:
        from blastoseg.synth import render_embryo

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        gen = torch.Generator().manual_seed(self.seed * 1009 + wid)
        k = 0
        while True:
            s = self.seed + wid + k * nw
            k += 1
            n = int(np.random.default_rng(s).integers(self.n_cells[0], self.n_cells[1] + 1))
            for m in render_embryo(n, seed=s, config=self.config).instances.masks:
                if m.sum() < self.min_area:
                    continue
                cut = _tight_crop(m)
                if cut is not None:
                    yield _make_crop(*cut, self.size, self.augment, gen)


def random_blob_masks(n: int, seed: int = 0, canvas: int = 64) -> list[np.ndarray]:
    """Hand-made irregular ellipses (semi-axes, rotation, a few outline harmonics), each a
    (canvas, canvas) bool mask; about one in ten is cut by a straight frame edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float64)
    out = []
    for _ in range(n):
        a = rng.uniform(0.18, 0.38) * canvas
        b = a * rng.uniform(0.55, 1.0)
        th = rng.uniform(0, np.pi)
        cx, cy = canvas / 2 + rng.normal(0, 2, size=2)
        dx, dy = xx - cx, yy - cy
        u = (dx * np.cos(th) + dy * np.sin(th)) / a
        v = (-dx * np.sin(th) + dy * np.cos(th)) / b
        phi = np.arctan2(dy, dx)
        wobble = 1.0
        for k in (2, 3, 4):
            wobble = wobble + rng.normal(0, 0.04) * np.cos(k * phi - rng.uniform(0, 2 * np.pi))
        m = (u * u + v * v) * wobble <= 1.0
        if rng.random() < 0.1:  # a cell at the edge of the frame
            side = rng.integers(4)
            cut = int(rng.uniform(0.2, 0.45) * canvas)
            sl = [np.s_[:cut, :], np.s_[-cut:, :], np.s_[:, :cut], np.s_[:, -cut:]][side]
            m[sl] = False
        out.append(m)
    return out
