"""Per-head pixel targets of the SE-U-Net (thesis section 4.2: decoupled decoder heads).

From the AMODAL instance masks of one frame (cells may overlap) and an optional nucleus mask:

``cytoplasm``
    union of the amodal masks (whole-cell foreground).
``nuclei``
    the nucleus mask (absent from the result when no nucleus mask is given).
``border``
    the inner band of width ``border_width`` along EACH cell's own amodal outline. Because
    every cell contributes its own outline, the outline of a cell lying on top of another one
    (inside the overlap) is part of the target too. The image edge is not an outline: a cell
    cut by the image edge has no border band along it (its real outline is outside the
    image).
``background``
    not cytoplasm.
``overlap``
    pixels inside two or more amodal masks.

Every map is float32 (H, W) with values 0 and 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage as ndi

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances

__all__ = ["HEADS", "as_mask_stack", "border_band", "head_targets"]

#: Head names of the SE-U-Net, in the fixed order used by models, targets and losses.
HEADS = ("cytoplasm", "nuclei", "border", "background", "overlap")


def as_mask_stack(instances: FrameInstances | np.ndarray) -> np.ndarray:
    """(N, H, W) bool amodal masks from a :class:`FrameInstances` or an (N, H, W) mask stack."""
    if isinstance(instances, FrameInstances):
        return instances.masks
    masks = np.asarray(instances)
    if masks.ndim != 3:
        raise InvalidImageError(f"instance masks must be FrameInstances or an (N, H, W) "
                                f"stack; got an array of shape {masks.shape}")
    if masks.dtype != bool:
        if not np.issubdtype(masks.dtype, np.integer) or masks.size and (
                masks.min() < 0 or masks.max() > 1):
            raise InvalidImageError(f"an (N, H, W) mask stack must hold 0/1 or bool values; "
                                    f"got dtype {masks.dtype}")
        masks = masks.astype(bool)
    return masks


def padded_box(mask: np.ndarray, pad: int = 1) -> tuple[slice, slice] | None:
    """The tight bounding box of ``mask`` grown by ``pad`` pixels (clipped to the image), or
    None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, h)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, w)))


def inside_distance(crop: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel of ``crop`` (a cell's mask cropped to its bounding box
    plus one pixel where the image allows) to the nearest pixel outside the cell: 1 on the
    cell's outline, 0 outside it.

    The crop's own edge does not count as outside, so a cell cut by the image edge has no
    outline along it; a cell that fills the whole crop (it covers the whole image) is measured
    from the image edge instead.
    """
    if crop.all():
        return ndi.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    return ndi.distance_transform_edt(crop)


def border_band(mask: np.ndarray, width: float = 2) -> np.ndarray:
    """bool (H, W): the pixels of ``mask`` less than ``width`` + 0.5 pixels (Euclidean) from
    its outline, i.e. a band about ``width`` pixels wide along the inside of the outline."""
    out = np.zeros(mask.shape, dtype=bool)
    _or_band(out, mask, width)
    return out


def _or_band(out: np.ndarray, mask: np.ndarray, width: float) -> None:
    box = padded_box(mask)
    if box is None or width <= 0:
        return
    crop = mask[box]
    out[box] |= crop & (inside_distance(crop) < width + 0.5)


def head_targets(instances: FrameInstances | np.ndarray, nuclei: np.ndarray | None = None,
                 border_width: float = 2, heads: Iterable[str] = HEADS
                 ) -> dict[str, np.ndarray]:
    """Pixel targets of the SE-U-Net heads for one frame.

    Parameters
    ----------
    instances
        The frame's amodal instances (:class:`FrameInstances` or an (N, H, W) mask stack).
    nuclei
        Optional (H, W) nucleus mask or label image (``> 0`` = nucleus). None: no ``nuclei``
        key in the result (the nuclei head's loss is then skipped for this sample).
    border_width
        Width in pixels of each cell's border band (see the module docstring).
    heads
        Which targets to compute, any subset of :data:`HEADS`.

    Returns
    -------
    dict
        Head name -> float32 (H, W) 0/1 map, in the order of ``heads``.
    """
    heads = tuple(heads)
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise BlastosegError(f"unknown head name(s) {unknown}; choose from {list(HEADS)}")
    masks = as_mask_stack(instances)
    shape = masks.shape[1:]
    if nuclei is not None:
        nuclei = np.asarray(nuclei)
        if nuclei.shape != shape:
            raise InvalidImageError(f"nucleus mask is {nuclei.shape} but the instance masks "
                                    f"are {shape}; they must have the same size")
    coverage = masks.sum(axis=0, dtype=np.int32) if len(masks) else np.zeros(shape, np.int32)
    out: dict[str, np.ndarray] = {}
    for head in heads:
        if head == "cytoplasm":
            out[head] = (coverage > 0).astype(np.float32)
        elif head == "background":
            out[head] = (coverage == 0).astype(np.float32)
        elif head == "overlap":
            out[head] = (coverage >= 2).astype(np.float32)
        elif head == "nuclei":
            if nuclei is not None:
                out[head] = (nuclei > 0).astype(np.float32)
        elif head == "border":
            border = np.zeros(shape, dtype=bool)
            for m in masks:
                _or_band(border, m, border_width)
            out[head] = border.astype(np.float32)
    return out
