"""COCO segmentation helpers: every RLE goes through pycocotools (nothing is hand-rolled)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from blastoseg.errors import DatasetFormatError

__all__ = ["decode_segmentation", "encode_mask", "rle_area", "rle_bbox", "segmentation_size"]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode one (H, W) boolean mask as COCO compressed RLE with ``counts`` as str.

    Parameters
    ----------
    mask
        (H, W) mask; anything non-zero is foreground.

    Returns
    -------
    dict
        ``{"size": [H, W], "counts": "<compressed string>"}``, JSON-serialisable.
    """
    # pycocotools wants column-major uint8 (it walks pixels in Fortran order)
    arr = np.asfortranarray(np.asarray(mask, dtype=bool).astype(np.uint8))
    rle = mask_utils.encode(arr)
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def rle_bbox(rle: dict[str, Any]) -> list[float]:
    """Amodal box of an RLE as COCO XYWH floats (pycocotools ``toBbox``)."""
    return [float(v) for v in mask_utils.toBbox(_as_compressed(rle))]


def rle_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of an RLE (pycocotools ``area``)."""
    return int(mask_utils.area(_as_compressed(rle)))


def segmentation_size(segmentation: Any) -> tuple[int, int] | None:
    """The (H, W) an RLE segmentation declares, or None for polygons (they carry no size)."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if not (isinstance(size, (list, tuple)) and len(size) == 2):
            raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
        return int(size[0]), int(size[1])
    return None


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation of any flavour into an (H, W) bool mask.

    Accepts compressed RLE (``counts`` str or bytes), uncompressed RLE (``counts`` a list of
    ints, as written by many tools) and polygons (a list of flat ``[x0, y0, x1, y1, ...]``
    lists, unioned).

    Raises
    ------
    ValueError
        If the segmentation is of an unknown kind or its size is not (height, width); the
        caller turns it into a DatasetFormatError naming the file and annotation.
    """
    if isinstance(segmentation, dict):
        size = segmentation_size(segmentation)
        if size != (height, width):
            raise ValueError(f"RLE size {list(size)} does not match the image ({height}, {width})")
        if "counts" not in segmentation:
            raise ValueError("RLE has no 'counts'")
        rle = _as_compressed(segmentation)
    elif isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, (list, tuple))]
        if len(polygons) != len(segmentation):
            raise ValueError("polygon segmentation must be a list of [x0, y0, x1, y1, ...] lists")
        # pycocotools rejects polygons with fewer than 3 points; such a polygon is empty anyway
        polygons = [[float(v) for v in p] for p in polygons if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    else:
        raise ValueError(f"segmentation must be an RLE dict or a list of polygons, "
                         f"got {type(segmentation).__name__}")
    with warnings.catch_warnings():
        # pycocotools' Cython array wrapper predates numpy 2's copy= keyword; harmless
        warnings.filterwarnings("ignore", message="__array__ implementation",
                                category=DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _as_compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """Compressed RLE that pycocotools' C functions accept (counts as bytes)."""
    counts = rle["counts"]
    h, w = (int(v) for v in rle["size"])
    if isinstance(counts, list):
        # uncompressed RLE: pycocotools converts it with frPyObjects
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise ValueError(f"RLE 'counts' must be a string or a list, got {type(counts).__name__}")
    return {"size": [h, w], "counts": counts}


def check_segmentation(segmentation: Any, height: int, width: int, where: str) -> None:
    """Cheap structural check used when a dataset is opened (no decoding)."""
    try:
        size = segmentation_size(segmentation)
    except ValueError as exc:
        raise DatasetFormatError(f"{where}: {exc}") from None
    if size is not None and size != (height, width):
        raise DatasetFormatError(
            f"{where}: RLE size {list(size)} does not match the image's height/width "
            f"({height}, {width})"
        )
    if size is None and not isinstance(segmentation, list):
        raise DatasetFormatError(
            f"{where}: segmentation must be an RLE dict or a list of polygons, "
            f"got {type(segmentation).__name__}"
        )
