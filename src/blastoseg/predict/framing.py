"""Framing: crop a square around the embryo, rescale it to the model's working size, and map
the model's masks back onto the original frame.

Training (:class:`blastoseg.train.amodal_data.AmodalDataset`) and inference use the same
functions, so the model always sees embryos at the same scale, whatever the magnification
or framing of the camera.

>>> crop, framing = frame_for_model(image, locate_embryo(image), working_size=256)
>>> masks_full = framing.to_original(masks_256)     # (N, H, W), same dtype kind as given

Coordinates: pixel *edges*; original pixel (i, j) spans [j, j + 1) x [i, i + 1). The crop is
the square [x0, x0 + side) x [y0, y0 + side), resampled to S x S pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.io.frames import grey_frame
from blastoseg.predict.embryo_box import EmbryoBox

__all__ = [
    "DEFAULT_MARGIN",
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "Framing",
    "frame_for_model",
    "normalise_image",
    "to_grey",
]

MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 4096
#: the crop's half side is (1 + margin) x the embryo radius
DEFAULT_MARGIN = 0.15
_LOW, _HIGH = 1.0, 99.8  # normalisation percentiles


def to_grey(image: np.ndarray, index: int | None = None) -> np.ndarray:
    """One 2D float32 frame the amodal model can frame: :func:`blastoseg.io.frames.grey_frame`
    (any real dtype, grey RGB(A) averaged; other shapes and NaN / infinite pixels refused),
    from 64 to 4096 px per side. ``index`` names the frame of a stack in errors."""
    shape = np.shape(image)
    # the size first: a 100000 x 100000 frame must be refused before its float32 copy
    # (37 GiB) is made, not by a MemoryError
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4)):
        _check_size(*shape[:2])
    a = grey_frame(image, index, min_side=1)
    _check_size(*a.shape)
    return a


def _check_size(h: int, w: int) -> None:
    if min(h, w) < MIN_IMAGE_SIZE or max(h, w) > MAX_IMAGE_SIZE:
        raise InvalidImageError(
            f"expected a frame from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels per side; got "
            f"{h} x {w}. Resample it (or crop the embryo) first.")


def _scale01(a: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray | None:
    ref = a if ref is None else ref
    lo, hi = np.percentile(ref, (_LOW, _HIGH))
    if hi <= lo:
        lo, hi = float(ref.min()), float(ref.max())
    if hi <= lo:
        return None
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Any-dtype frame -> float32 (H, W) with the 1st / 99.8th percentiles at 0 / 1 (clipped).

    Raises
    ------
    InvalidImageError
        Wrong ndim or channels, fewer than 64 or more than 4096 pixels per side, NaN or
        infinite pixels, a constant image; the message says what was expected.
    """
    a = to_grey(image)
    out = _scale01(a)
    if out is None:
        raise InvalidImageError(f"the frame is constant (every pixel is {float(a.flat[0])!r}); "
                                "expected a microscope image with some contrast")
    return out


@dataclass(frozen=True)
class Framing:
    """How a model input was cut from an original frame.

    Attributes
    ----------
    image_shape
        (H, W) of the original frame.
    x0, y0
        Top-left corner of the crop square, original pixel-edge coordinates (may be < 0 or
        beyond the frame: those parts were padded).
    side
        Side of the crop square in original pixels.
    size
        Side S of the model input.
    """

    image_shape: tuple[int, int]
    x0: float
    y0: float
    side: float
    size: int

    @property
    def scale(self) -> float:
        """Model pixels per original pixel."""
        return self.size / self.side

    @classmethod
    def around(cls, image_shape: tuple[int, int], box: EmbryoBox | None, size: int,
               margin: float = DEFAULT_MARGIN) -> Framing:
        """The square around ``box`` (grown by ``margin``), or around the whole frame when
        ``box`` is None or has confidence 0 (:meth:`EmbryoBox.full_frame`)."""
        h, w = int(image_shape[0]), int(image_shape[1])
        if box is None or box.confidence <= 0:
            side = float(max(h, w))
            return cls((h, w), (w - side) / 2.0, (h - side) / 2.0, side, int(size))
        x1, y1, x2, y2 = box.xyxy(margin)
        return cls((h, w), float(x1), float(y1), float(x2 - x1), int(size))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    def describe(self) -> dict:
        """JSON-ready summary for result metadata: the fields plus the scale."""
        return {**self.to_dict(), "scale": round(self.scale, 6)}

    # --- original -> model ------------------------------------------------------------
    def _to_model_params(self) -> tuple[np.ndarray, np.ndarray]:
        # model pixel centre u (index) <- original index i = x0 - 0.5 + (u + 0.5) / scale
        inv = 1.0 / self.scale
        off = np.array([self.y0 - 0.5 + 0.5 * inv, self.x0 - 0.5 + 0.5 * inv])
        return np.array([inv, inv]), off

    def crop(self, grey: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample a 2D float frame into the (S, S) model input (edge padding, anti-aliased)."""
        a = np.asarray(grey, dtype=np.float32)
        inv = 1.0 / self.scale
        if inv > 1.5:  # shrinking: low-pass first so granules do not alias
            a = ndimage.gaussian_filter(a, 0.5 * np.sqrt(inv * inv - 1.0), mode="nearest")
        mat, off = self._to_model_params()
        return ndimage.affine_transform(a, mat, offset=off, output_shape=(self.size, self.size),
                                        order=order, mode="nearest").astype(np.float32)

    def masks_to_model(self, masks: np.ndarray) -> np.ndarray:
        """(N, H, W) or (H, W) bool masks -> (N, S, S) / (S, S) bool; outside the frame is empty."""
        m = np.asarray(masks)
        single = m.ndim == 2
        m = m[None] if single else m
        mat, off = self._to_model_params()
        out = np.zeros((len(m), self.size, self.size), dtype=bool)
        for k, mk in enumerate(m):
            if mk.any():
                out[k] = ndimage.affine_transform(mk.astype(np.float32), mat, offset=off,
                                                  output_shape=(self.size, self.size), order=1,
                                                  mode="constant", cval=0.0) > 0.5
        return out[0] if single else out

    def instances_to_model(self, inst: FrameInstances) -> FrameInstances:
        """Ground truth in the model's frame: masks, visible masks resampled, occlusion recomputed."""
        masks = self.masks_to_model(inst.masks)
        vis = None if inst.visible_masks is None else self.masks_to_model(inst.visible_masks) & masks
        return replace(inst, masks=masks, visible_masks=vis,
                       occlusion=(masks.sum(axis=0) >= 2).astype(np.float32),
                       meta=dict(inst.meta))

    # --- model -> original ------------------------------------------------------------
    def to_original(self, maps: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Map (N, S, S) masks or probabilities, or one (S, S) map, back to the original frame.

        Bilinear resampling back to the original pixel grid, pasted at the crop's place;
        whatever lies outside the frame is clipped, the rest of the frame is 0. Bool input
        gives bool output (resampled as 0/1 and thresholded at 0.5, or ``threshold``);
        float input gives float32 probabilities unless ``threshold`` is given.
        """
        m = np.asarray(maps)
        single = m.ndim == 2
        m = m[None] if single else m
        if m.ndim != 3 or m.shape[1:] != (self.size, self.size):
            raise InvalidImageError(f"expected (N, {self.size}, {self.size}) or "
                                    f"({self.size}, {self.size}) maps; got shape {np.shape(maps)}")
        is_bool = m.dtype == bool
        thr = 0.5 if (is_bool and threshold is None) else threshold
        h, w = self.image_shape
        out = np.zeros((len(m), h, w), dtype=bool if thr is not None else np.float32)
        # only the part of the frame the crop covers needs resampling
        r0, r1 = max(0, int(np.floor(self.y0))), min(h, int(np.ceil(self.y0 + self.side)))
        c0, c1 = max(0, int(np.floor(self.x0))), min(w, int(np.ceil(self.x0 + self.side)))
        if r1 <= r0 or c1 <= c0:
            return out[0] if single else out
        s = self.scale
        # original index i -> model index u = (i + 0.5 - y0) * s - 0.5
        off = np.array([(r0 + 0.5 - self.y0) * s - 0.5, (c0 + 0.5 - self.x0) * s - 0.5])
        for k, mk in enumerate(m):
            a = mk.astype(np.float32)
            if s < 1 / 1.5:  # shrinking back (model finer than the original): low-pass
                a = ndimage.gaussian_filter(a, 0.5 * np.sqrt(1 / (s * s) - 1.0), mode="nearest")
            v = ndimage.affine_transform(a, np.array([s, s]), offset=off,
                                         output_shape=(r1 - r0, c1 - c0), order=1,
                                         mode="nearest")
            out[k, r0:r1, c0:c1] = (v > thr) if thr is not None else v
        return out[0] if single else out

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) XYXY boxes in model pixels -> original pixels (not clipped)."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / self.scale
        return b + np.array([self.x0, self.y0, self.x0, self.y0], dtype=np.float32)

    def points_to_original(self, yx: np.ndarray) -> np.ndarray:
        """(N, 2) (y, x) pixel-centre coordinates in the model -> original."""
        p = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
        return (p + 0.5) / self.scale + np.array([self.y0, self.x0]) - 0.5


def frame_for_model(image: np.ndarray, box: EmbryoBox | None, working_size: int = 256,
                    margin: float = DEFAULT_MARGIN, *, normalise: bool = True
                    ) -> tuple[np.ndarray, Framing]:
    """Crop the square around the embryo and rescale it to ``working_size``.

    Parameters
    ----------
    image
        One frame, any real dtype; grey RGB accepted.
    box
        Where the embryo is (:func:`~blastoseg.predict.localise.locate_embryo`); None (or a
        box with confidence 0) frames the whole image, centred and padded to a square.
    working_size
        Side S of the model input.
    margin
        The crop's half side is ``(1 + margin) * box.radius``.
    normalise
        Map the crop's 1st / 99.8th percentiles to 0 / 1 (clipped).

    Returns
    -------
    crop : np.ndarray
        (S, S) float32.
    framing : Framing
        How to map results back (:meth:`Framing.to_original`).
    """
    grey = to_grey(image)
    if not isinstance(working_size, (int, np.integer)) or working_size < 16:
        raise ValueError(f"working_size must be an integer >= 16; got {working_size!r}")
    framing = Framing.around(grey.shape, box, int(working_size), margin)
    crop = framing.crop(grey)
    if normalise:
        out = _scale01(crop)
        if out is None:
            raise InvalidImageError("the frame is constant inside the embryo's crop; expected "
                                    "a microscope image with some contrast")
        crop = out
    return crop, framing
