"""COCO helpers: segmentations (every RLE goes through pycocotools, nothing is hand-rolled)
and structural validation of a COCO instances document."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from blastoseg.errors import DatasetFormatError

__all__ = ["DEFAULT_CATEGORIES", "check_segmentation", "decode_segmentation", "encode_mask",
           "parse_categories", "rle_area", "rle_bbox", "segmentation_size", "validate_coco"]

DEFAULT_CATEGORIES: dict[int, str] = {1: "blastomere"}


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


def run_lengths(counts: bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (the COCO mask API's LEB128-like code:
    5 bits per character, a continuation bit, a sign bit on the last character, and runs after
    the second stored as differences to the run two before). Raises ValueError when the string
    is cut short in the middle of a number."""
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("RLE 'counts' is cut short in the middle of a run length")
            c = counts[pos] - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE 'counts' has a character that is not part of the code "
                                 f"({chr(counts[pos])!r} at position {pos})")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _check_runs(runs: list[int], h: int, w: int) -> None:
    """A valid RLE covers the image exactly: no negative runs, runs summing to H * W."""
    if any(r < 0 for r in runs):
        raise ValueError("RLE 'counts' has a negative run length: the mask is corrupt")
    total = sum(runs)
    if total != h * w:
        raise ValueError(f"RLE 'counts' covers {total} pixels but the image has {h} x {w} = "
                         f"{h * w}: the mask is corrupt (cut short or edited)")


def _as_compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """Compressed RLE that pycocotools' C functions accept (counts as bytes), after checking
    that its runs cover the image exactly (pycocotools decodes a corrupt RLE silently)."""
    counts = rle["counts"]
    h, w = (int(v) for v in rle["size"])
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise ValueError("uncompressed RLE 'counts' must be a list of whole numbers")
        _check_runs(counts, h, w)
        # uncompressed RLE: pycocotools converts it with frPyObjects
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("RLE 'counts' has non-ASCII characters: the mask is corrupt") from None
    if not isinstance(counts, bytes):
        raise ValueError(f"RLE 'counts' must be a string or a list, got {type(counts).__name__}")
    _check_runs(run_lengths(counts), h, w)
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


def parse_categories(doc: dict, ann_path: Path) -> dict[int, str]:
    """Category id -> name; without ``categories`` the used ids get default names."""
    raw = doc.get("categories")
    if raw is None:  # plain COCO without categories: name the ids that are used
        used = sorted({a["category_id"] for a in doc["annotations"]}) or [1]
        return {c: DEFAULT_CATEGORIES.get(c, f"category_{c}") for c in used}
    cats: dict[int, str] = {}
    for c in raw:
        if not isinstance(c, dict) or "id" not in c:
            raise DatasetFormatError(f"{ann_path}: every category needs an 'id'; got {c!r}")
        if c["id"] in cats:
            raise DatasetFormatError(f"{ann_path}: duplicate category id {c['id']}")
        cats[int(c["id"])] = str(c.get("name", f"category_{c['id']}"))
    return cats


def validate_coco(doc: Any, ann_path: Path) -> None:
    """Check a COCO document's structure (keys, ids, references, RLE sizes) without
    decoding masks; raise DatasetFormatError naming ``ann_path`` and the problem."""
    if not isinstance(doc, dict):
        raise DatasetFormatError(f"{ann_path}: top level must be a JSON object")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            raise DatasetFormatError(f"{ann_path}: missing required list {key!r}")
    sizes: dict[int, tuple[int, int]] = {}
    for k, entry in enumerate(doc["images"]):
        _require(entry, ("id", "height", "width"), ("file_name",), f"{ann_path}: image entry #{k}")
        if entry["id"] in sizes:
            raise DatasetFormatError(f"{ann_path}: duplicate image id {entry['id']}")
        sizes[entry["id"]] = (entry["height"], entry["width"])
    for k, ann in enumerate(doc["annotations"]):
        _require(ann, ("id", "image_id", "category_id"), ("segmentation",),
                 f"{ann_path}: annotation #{k}")
    if "categories" in doc and not isinstance(doc["categories"], list):
        raise DatasetFormatError(f"{ann_path}: 'categories' must be a list")
    cat_ids = set(parse_categories(doc, ann_path))
    seen: set = set()
    for ann in doc["annotations"]:
        where = f"{ann_path}: annotation {ann['id']}"
        if ann["id"] in seen:
            raise DatasetFormatError(f"{ann_path}: duplicate annotation id {ann['id']}")
        seen.add(ann["id"])
        if ann["image_id"] not in sizes:
            raise DatasetFormatError(f"{where} refers to unknown image id {ann['image_id']}")
        if ann["category_id"] not in cat_ids:
            raise DatasetFormatError(f"{where} has unknown category id {ann['category_id']}")
        h, w = sizes[ann["image_id"]]
        check_segmentation(ann["segmentation"], h, w, where)
        if "visible_segmentation" in ann:
            check_segmentation(ann["visible_segmentation"], h, w, where + " (visible)")


def _require(obj: Any, int_keys: tuple[str, ...], other_keys: tuple[str, ...], where: str
             ) -> None:
    """Required keys present, and the id/size ones integers (JSON may hold anything)."""
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where} must be a JSON object, got {obj!r:.60}")
    missing = [key for key in (*int_keys, *other_keys) if key not in obj]
    if missing:
        raise DatasetFormatError(f"{where} lacks {missing}")
    bad = [key for key in int_keys if isinstance(obj[key], bool) or not isinstance(obj[key], int)]
    if bad:
        raise DatasetFormatError(f"{where}: {bad} must be integers, got "
                                 f"{[obj[key] for key in bad]}")
