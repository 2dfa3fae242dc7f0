"""How an oocyte frame becomes the SMANet's input, and its output the frame's class map.

The whole frame is the input (an oocyte fills most of a 40x frame): it is padded to a square
with the median of its border (no mirrored oocyte appears in the padding), resized to the
model's working size and normalised with its (1, 99.8) percentiles to [0, 1]. Training
(:mod:`blastoseg.train.oocyte_data`) and prediction use these same functions, so both see the
same pixels; class scores go back to the frame's size bilinearly before the argmax, so the
labels' borders are as fine as the frame's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from blastoseg.errors import InvalidImageError

__all__ = ["SquareFit", "class_scores_to_frame", "fit_labels", "fit_square", "normalise01"]

PERCENTILES = (1.0, 99.8)


@dataclass(frozen=True)
class SquareFit:
    """A frame of ``shape`` padded by ``pad`` (top, left) to a ``side`` square, resized to
    ``size``."""

    shape: tuple[int, int]
    side: int
    pad: tuple[int, int]
    size: int

    @property
    def px_per_working_px(self) -> float:
        return self.side / self.size


def _square(shape: tuple[int, int], size: int) -> SquareFit:
    h, w = shape
    side = max(h, w)
    return SquareFit(shape=(h, w), side=side, pad=((side - h) // 2, (side - w) // 2),
                     size=int(size))


def _resize(a: np.ndarray, size: int, mode: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
    if mode == "nearest":
        out = F.interpolate(t, size=(size, size), mode="nearest")
    else:  # area when shrinking (no aliasing of fine granules), bilinear when enlarging
        mode = "area" if a.shape[0] > size else "bilinear"
        out = F.interpolate(t, size=(size, size), mode=mode,
                            **({"align_corners": False} if mode == "bilinear" else {}))
    return out[0, 0].numpy()


def normalise01(a: np.ndarray) -> np.ndarray:
    """(1, 99.8) percentiles to 0 and 1, clipped; a constant image is refused."""
    lo, hi = np.percentile(a, PERCENTILES)
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        raise InvalidImageError("the frame is constant; expected a microscope image of an "
                                "oocyte")
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def fit_square(grey: np.ndarray, size: int) -> tuple[np.ndarray, SquareFit]:
    """A grey float frame -> the (size, size) normalised model input and how it was made."""
    fit = _square(grey.shape, size)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    square = np.full((fit.side, fit.side), float(np.median(border)), np.float32)
    h, w = fit.shape
    square[fit.pad[0]:fit.pad[0] + h, fit.pad[1]:fit.pad[1] + w] = grey
    return normalise01(_resize(square, size, "area")), fit


def fit_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """A class map through the same square fit (background padding, nearest resize)."""
    fit = _square(labels.shape, size)
    square = np.zeros((fit.side, fit.side), np.float32)
    h, w = fit.shape
    square[fit.pad[0]:fit.pad[0] + h, fit.pad[1]:fit.pad[1] + w] = labels
    return _resize(square, size, "nearest").astype(np.int64)


def class_scores_to_frame(scores: torch.Tensor, fit: SquareFit) -> torch.Tensor:
    """(C, size, size) scores -> (C, H, W) on the frame (bilinear, padding cut off)."""
    up = F.interpolate(scores[None].float(), size=(fit.side, fit.side), mode="bilinear",
                       align_corners=False)[0]
    h, w = fit.shape
    return up[:, fit.pad[0]:fit.pad[0] + h, fit.pad[1]:fit.pad[1] + w]
