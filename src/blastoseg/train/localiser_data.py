"""Training data for the learned embryo localiser (kind ``localiser``): whole frames and the
embryo's circle.

Any dataset folder whose image entries carry ``embryo_circle`` ([cx, cy, r], the zona's outer
face; written by ``blastoseg synth embryos``, or added by hand to real frames) can train it.
Each frame is letterboxed once to ``store_size`` (2x the input) and kept in memory (about
0.25 MB per frame at 256 px); every item is a random window of it resampled to the input
size, so the embryo appears at any position and at 22-95 % of the window, sometimes cut by
the window's edge, with flips, transposes and intensity changes (contrast, offset, a linear
illumination gradient, blur, noise). Validation items are the letterboxed frames unchanged.

An item is ``{"image": (1, S, S) float32, "circle": (3,) float32}`` (input pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from blastoseg.io.dataset import Dataset, read_dataset
from blastoseg.io.frames import grey_frame
from blastoseg.targets.circle_heatmap import letterbox

__all__ = ["LocaliserDataset", "circle_frames"]


def circle_frames(folders: list[Path]) -> list[tuple[Dataset, int, tuple[float, float, float]]]:
    """(opened dataset, image index, circle) of every image with an ``embryo_circle``; each
    folder is read once (reading validates all its annotations)."""
    found = []
    for folder in folders:
        ds = read_dataset(folder)
        for i in range(len(ds)):
            circle = ds.extra(i).get("embryo_circle")
            if circle is not None and len(circle) == 3 and float(circle[2]) > 0:
                found.append((ds, i, tuple(float(v) for v in circle)))
    return found


class LocaliserDataset(torch.utils.data.Dataset):
    """Frames with embryo circles, letterboxed and augmented (see the module docstring).

    Parameters
    ----------
    folders
        Dataset folders; images without ``embryo_circle`` are skipped.
    input_size
        The network's input side S.
    augment
        Random windows and intensity changes (training); False: the frame as it is.
    seed
        Augmentation seed (items are reproducible per epoch and index).
    max_items
        Use only the first N frames (e.g. for validation).
    """

    def __init__(self, folders: list[Path], input_size: int, *, augment: bool = True,
                 seed: int = 0, max_items: int | None = None) -> None:
        index = circle_frames([Path(f) for f in folders])
        if max_items is not None:
            index = index[:max(int(max_items), 0)]
        if not index:
            raise ValueError(f"no image with an embryo_circle in {', '.join(map(str, folders))}"
                             " (blastoseg synth embryos writes it; real frames need it added)")
        self.input_size = int(input_size)
        self.store_size = 2 * self.input_size if augment else self.input_size
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        images, circles = [], []
        for ds, i, (cx, cy, r) in index:
            grey = grey_frame(ds.load_image(i), min_side=1)
            t, box = letterbox(grey, self.store_size)
            images.append(t.to(torch.float16))
            circles.append(box.to_input(cx, cy, r))
        self.images = torch.stack(images)
        self.circles = torch.tensor(circles, dtype=torch.float32)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = self.images[i].float()
        circle = self.circles[i].clone()
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            image, circle = self._window(image, circle, rng)
            image = self._intensity(image, rng)
        return {"image": image, "circle": circle}

    def _window(self, image: torch.Tensor, circle: torch.Tensor,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random square window around the embryo, resampled to the input size."""
        size, full = self.input_size, self.store_size
        cx, cy, r = (float(v) for v in circle)
        side = min(2 * r / rng.uniform(0.22, 0.95), 1.3 * full)
        # the centre anywhere in the window, at least 0.6 r from its edges
        lo_x, hi_x = sorted((cx - side + 0.6 * r, cx - 0.6 * r))
        lo_y, hi_y = sorted((cy - side + 0.6 * r, cy - 0.6 * r))
        ox, oy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        theta = torch.tensor([[side / full, 0.0, (2 * ox + side) / full - 1],
                              [0.0, side / full, (2 * oy + side) / full - 1]],
                             dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 1, size, size], align_corners=False)
        out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)[0]
        k = size / side
        ncx, ncy, nr = (cx - ox) * k, (cy - oy) * k, r * k
        if rng.random() < 0.5:
            out, ncx = out.flip(-1), size - ncx
        if rng.random() < 0.5:
            out, ncy = out.flip(-2), size - ncy
        if rng.random() < 0.5:
            out, (ncx, ncy) = out.transpose(-1, -2), (ncy, ncx)
        return out.contiguous(), torch.tensor([ncx, ncy, nr], dtype=torch.float32)

    def _intensity(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        size = image.shape[-1]
        image = image * rng.uniform(0.6, 1.5) + rng.uniform(-0.3, 0.3)
        if rng.random() < 0.5:  # illumination gradient (vignetting, a well's shadow)
            ramp = torch.linspace(-1, 1, size)
            image = image + rng.uniform(-0.4, 0.4) * (rng.uniform(-1, 1) * ramp[None, None, :]
                                                      + rng.uniform(-1, 1) * ramp[None, :, None])
        if rng.random() < 0.3:
            image = F.avg_pool2d(image[None], 3, 1, 1, count_include_pad=False)[0]
        noise = torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32))
        return image + noise * rng.uniform(0.0, 0.15)
