"""Import LabelMe annotations (one ``.json`` per image) into the blastoseg dataset format.

Each shape becomes one amodal instance; shapes sharing a label and a non-null ``group_id``
are unioned into one instance (LabelMe's own instance convention). Polygons are rasterised
with their outline included, as LabelMe itself does, so a mask drawn on integer corners
covers those corner pixels.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage import draw

from blastoseg.errors import DatasetFormatError, ImageReadError
from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import Sample, lossless_suffix, write_dataset
from blastoseg.io.frame_names import natural_key
from blastoseg.io.images import decode_image_bytes, read_image

__all__ = ["import_labelme", "shape_to_mask"]

_AREA_SHAPES = ("polygon", "rectangle", "circle", "ellipse", "mask")


@dataclass
class _Doc:
    path: Path
    data: dict


def _json_files(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        src = Path(source)
        if src.is_dir():
            files = sorted((p for p in src.glob("*.json") if not p.name.startswith(".")),
                           key=lambda p: natural_key(p.name))
            if not files:
                raise DatasetFormatError(f"{src}: no LabelMe .json files in this folder")
            return files
        if not src.exists():
            raise DatasetFormatError(f"{src}: no such file or folder")
        return [src]
    files = [Path(p) for p in source]
    if not files:
        raise DatasetFormatError("import_labelme: the list of LabelMe files is empty")
    return files


def _load(path: Path) -> _Doc:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: no such LabelMe file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DatasetFormatError(f"{path}: not a LabelMe file (no 'shapes' list)")
    return _Doc(path, data)


def _image(doc: _Doc) -> np.ndarray:
    """The pixels of a LabelMe file: embedded ``imageData`` or the file at ``imagePath``."""
    data = doc.data
    if data.get("imageData"):
        try:
            raw = base64.b64decode(data["imageData"], validate=False)
        except (binascii.Error, ValueError) as exc:
            raise DatasetFormatError(f"{doc.path}: imageData is not valid base64 ({exc})"
                                     ) from None
        try:
            return decode_image_bytes(raw, name=f"{doc.path} (imageData)")
        except ImageReadError as exc:
            raise DatasetFormatError(str(exc)) from None
    rel = data.get("imagePath")
    if not rel:
        raise DatasetFormatError(f"{doc.path}: has neither imageData nor imagePath")
    rel = str(rel).replace("\\", "/")  # LabelMe on Windows writes backslashes
    candidates = [doc.path.parent / rel, doc.path.parent / Path(rel).name]
    for cand in candidates:
        if cand.is_file():
            try:
                return read_image(cand)
            except ImageReadError as exc:
                raise DatasetFormatError(f"{doc.path}: its image {cand} cannot be read: "
                                         f"{exc}") from None
    raise DatasetFormatError(f"{doc.path}: image {rel!r} not found (looked for "
                             f"{', '.join(str(c) for c in candidates)})")


def shape_to_mask(shape: dict, size: tuple[int, int]) -> np.ndarray | None:
    """Rasterise one LabelMe shape into an (H, W) bool mask; None for non-area shapes.

    Parameters
    ----------
    shape
        A LabelMe shape: ``points`` as [[x, y], ...] and ``shape_type`` (default polygon).
        Circles are (centre, point on the circumference); rectangles and ellipses are two
        opposite corners of their bounding box; ``mask`` shapes carry a base64 PNG placed at
        their first point.
    size
        (H, W) of the image.
    """
    h, w = size
    kind = shape.get("shape_type") or "polygon"
    pts = np.asarray(shape.get("points") or [], dtype=float).reshape(-1, 2)
    out = np.zeros((h, w), dtype=bool)
    if kind not in _AREA_SHAPES or len(pts) == 0:
        return None
    if not np.isfinite(pts).all():
        raise ValueError("its points include NaN or infinite coordinates")
    xs, ys = pts[:, 0], pts[:, 1]
    if kind == "polygon":
        if len(pts) < 3:
            return None
        out[draw.polygon(ys, xs, shape=size)] = True
        # include the outline, as LabelMe's own shape_to_mask does
        out[draw.polygon_perimeter(np.round(ys), np.round(xs), shape=size, clip=False)] = True
    elif kind in ("rectangle", "ellipse"):
        if len(pts) < 2:
            return None
        (x0, x1), (y0, y1) = sorted(np.round(xs[:2])), sorted(np.round(ys[:2]))
        if kind == "rectangle":
            rr, cc = draw.rectangle((y0, x0), (y1, x1), shape=size)
            out[rr.astype(int), cc.astype(int)] = True
        else:
            rr, cc = draw.ellipse((y0 + y1) / 2, (x0 + x1) / 2, max((y1 - y0) / 2, 0.5),
                                  max((x1 - x0) / 2, 0.5), shape=size)
            out[rr, cc] = True
    elif kind == "circle":
        if len(pts) < 2:
            return None
        radius = float(np.hypot(xs[1] - xs[0], ys[1] - ys[0]))
        out[draw.disk((ys[0], xs[0]), max(radius, 0.5), shape=size)] = True
        rr, cc = draw.circle_perimeter(int(round(ys[0])), int(round(xs[0])),
                                       int(round(radius)), shape=size)
        out[rr, cc] = True
    else:  # "mask": a base64 PNG of the shape's bounding box
        crop = decode_image_bytes(base64.b64decode(shape.get("mask") or ""),
                                  name="LabelMe mask shape").astype(bool)
        if crop.ndim == 3:
            crop = crop.any(axis=-1)
        y0, x0 = int(round(ys[0])), int(round(xs[0]))
        ch, cw = crop.shape
        ya, xa = max(y0, 0), max(x0, 0)
        yb, xb = min(y0 + ch, h), min(x0 + cw, w)
        if yb > ya and xb > xa:
            out[ya:yb, xa:xb] = crop[ya - y0:yb - y0, xa - x0:xb - x0]
    return out


def _instances(doc: _Doc, size: tuple[int, int], label_ids: dict[str, int]) -> FrameInstances:
    """Rasterise a file's shapes; one instance per shape or per (label, group_id)."""
    groups: dict[tuple, tuple[str, np.ndarray]] = {}
    for k, shape in enumerate(doc.data["shapes"]):
        label = str(shape.get("label", ""))
        kind = shape.get("shape_type") or "polygon"
        if kind not in _AREA_SHAPES:
            warnings.warn(f"{doc.path}: skipping {kind!r} shape labelled {label!r} "
                          f"(only areas become instances)", stacklevel=3)
            continue
        try:
            mask = shape_to_mask(shape, size)
        except (ValueError, TypeError, ImageReadError, binascii.Error) as exc:
            raise DatasetFormatError(f"{doc.path}: shape #{k} ({kind}, label {label!r}) "
                                     f"is malformed: {exc}") from None
        if mask is None or not mask.any():
            warnings.warn(f"{doc.path}: skipping {kind!r} shape labelled {label!r}: it "
                          f"covers no pixel of the image", stacklevel=3)
            continue
        group = shape.get("group_id")
        key = (label, group) if group is not None else (label, None, k)
        if key in groups:
            groups[key][1][...] |= mask
        else:
            groups[key] = (label, mask)
    if not groups:
        return FrameInstances.empty(size)
    labels = [label for label, _ in groups.values()]
    return FrameInstances(masks=np.stack([m for _, m in groups.values()]),
                          class_ids=[label_ids[lb] for lb in labels])


def _area_labels(doc: _Doc) -> set[str]:
    return {str(s.get("label", "")) for s in doc.data["shapes"]
            if (s.get("shape_type") or "polygon") in _AREA_SHAPES}


def import_labelme(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    label_map: dict[str, int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert LabelMe annotations into a blastoseg dataset folder.

    Parameters
    ----------
    source
        A folder of LabelMe ``.json`` files (one per image, natural-sorted), one file, or a
        list of files. Images come from the embedded ``imageData`` or from ``imagePath``
        (relative to the JSON file).
    out_dir
        Output dataset folder; images are re-saved losslessly under ``images/`` named after
        their JSON file, and ``annotations.json`` is written by
        :func:`~blastoseg.io.dataset.write_dataset`.
    label_map
        Label -> category id. Default: ids 1, 2, ... in sorted label order.
    overwrite
        Passed to ``write_dataset`` (an existing ``annotations.json`` is kept as a .bak).

    Returns
    -------
    Path
        The written ``annotations.json``.

    Raises
    ------
    DatasetFormatError
        Unreadable JSON, missing image (the message names the JSON file), a label missing
        from ``label_map``, or a malformed shape.
    """
    docs = [_load(p) for p in _json_files(source)]
    labels = sorted(set().union(*(_area_labels(d) for d in docs)))
    if label_map is None:
        label_ids = {label: i + 1 for i, label in enumerate(labels)}
    else:
        label_ids = {str(k): int(v) for k, v in label_map.items()}
        unknown = [lb for lb in labels if lb not in label_ids]
        if unknown:
            raise DatasetFormatError(f"labels {unknown} are not in label_map (which has "
                                     f"{sorted(label_ids)})")
    categories: dict[int, str] = {}
    for label, cid in sorted(label_ids.items(), key=lambda kv: (kv[1], kv[0])):
        categories.setdefault(cid, label)  # several labels may map to one id: first names it
    if not categories:
        categories = {1: "blastomere"}
    return write_dataset(out_dir, _samples(docs, label_ids), categories, overwrite=overwrite,
                         info={"source": "labelme"})


def _samples(docs: list[_Doc], label_ids: dict[str, int]) -> Iterator[Sample]:
    used: set[str] = set()
    for doc in docs:
        image = _image(doc)
        size = image.shape[:2]
        declared = (doc.data.get("imageHeight"), doc.data.get("imageWidth"))
        if None not in declared and tuple(int(v) for v in declared) != size:
            raise DatasetFormatError(f"{doc.path}: imageHeight/imageWidth {declared} do not "
                                     f"match the image's size {size}")
        stem, n = doc.path.stem, 1
        while stem in used:  # same stem from different folders
            n += 1
            stem = f"{doc.path.stem}_{n}"
        used.add(stem)
        yield Sample(image=image, instances=_instances(doc, size, label_ids),
                     file_name=f"images/{stem}{lossless_suffix(image)}",
                     extra={"labelme_file": doc.path.name})
