"""The blastoseg dataset format: a folder with ``annotations.json`` (COCO instances) and images.

Each annotation's ``segmentation`` is the AMODAL mask as COCO compressed RLE (pycocotools),
``bbox`` the amodal box (XYWH), optional ``visible_segmentation`` the visible part, ``score``
(when not 1.0) and ``track_id``. Image entries carry ``id``, ``file_name``, ``height``,
``width`` and optionally ``video_id``, ``frame_index``, ``focal_plane``, ``pixel_size_um`` and
any further JSON-able keys (a sample's ``extra``). Plain COCO files from other tools (polygons,
uncompressed RLE, missing optional keys) are read too.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from blastoseg.errors import DatasetFormatError, ImageReadError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.io.atomic import atomic_write_bytes, atomic_write_text, backup_existing
from blastoseg.io.coco_rle import (
    DEFAULT_CATEGORIES,
    decode_segmentation,
    encode_mask,
    parse_categories,
    rle_area,
    rle_bbox,
    validate_coco,
)
from blastoseg.io.images import read_image

__all__ = ["ANNOTATIONS_FILE", "DEFAULT_CATEGORIES", "Dataset", "Sample", "read_dataset",
           "write_dataset"]

ANNOTATIONS_FILE = "annotations.json"
FORMAT_VERSION = 1
# image-entry keys with a fixed meaning; everything else is a sample's ``extra``
_OPTIONAL_IMAGE_KEYS = ("video_id", "frame_index", "focal_plane", "pixel_size_um")
_RESERVED_IMAGE_KEYS = frozenset(("id", "file_name", "height", "width", *_OPTIONAL_IMAGE_KEYS))


@dataclass
class Sample:
    """One frame of a dataset: pixels, instances and image-level metadata.

    Attributes
    ----------
    image
        (H, W) of any dtype or (H, W, 3) RGB. May be None when writing if ``file_name``
        already exists inside the output folder (annotation-only export of existing images).
    instances
        The frame's instances (amodal masks, class ids, scores, optional visible masks and
        track ids).
    file_name
        Path relative to the dataset folder (POSIX separators); default
        ``images/{image_id:06d}.png`` (or ``.tif`` for dtypes PNG cannot hold).
    video_id, frame_index, focal_plane, pixel_size_um
        Optional image-level metadata written when not None.
    extra
        Further JSON-able image-level keys (e.g. ``n_cells``, ``seed``), stored at the top
        level of the image entry.
    """

    image: np.ndarray | None
    instances: FrameInstances
    file_name: str | None = None
    video_id: int | None = None
    frame_index: int | None = None
    focal_plane: int | None = None
    pixel_size_um: float | None = None
    extra: dict = field(default_factory=dict)


# --- writing -------------------------------------------------------------------------------

def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays sneak into metadata dicts; store them as plain JSON values
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serialisable")


def lossless_suffix(image: np.ndarray) -> str:
    """``.png`` for uint8/uint16 grey and uint8 RGB, ``.tif`` for every other image."""
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[-1] == 3):
        return ".png"
    if image.dtype == np.uint16 and image.ndim == 2:
        return ".png"
    return ".tif"


def _encode_image(image: np.ndarray, suffix: str) -> bytes:
    if suffix == ".png":
        import imageio.v3 as iio

        return iio.imwrite("<bytes>", image, extension=".png")
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, image, compression="zlib",
                     photometric="rgb" if image.ndim == 3 else "minisblack")
    return buf.getvalue()


def _resolve_file_name(name: str, image: np.ndarray | None, index: int) -> str:
    """Validate a relative file name; switch lossy or unfit suffixes to a lossless one."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DatasetFormatError(f"sample {index}: file_name {name!r} must be a relative "
                                 f"path inside the dataset folder")
    if image is None:
        return rel.as_posix()
    suffix = rel.suffix.lower()
    wanted = lossless_suffix(image)
    fits = suffix in (".tif", ".tiff") or (suffix == ".png" and wanted == ".png")
    if not fits:
        new = rel.with_suffix(wanted)
        warnings.warn(f"sample {index}: {name!r} cannot hold a {image.dtype} "
                      f"{image.shape} image losslessly; writing {new.as_posix()!r} instead",
                      stacklevel=3)
        rel = new
    return rel.as_posix()


def _write_image(path: Path, image: np.ndarray, suffix: str) -> None:
    """Write atomically; an existing different file is backed up first, an identical one
    is left untouched (so rewriting a dataset in place creates no needless backups)."""
    if path.exists():
        try:
            old = read_image(path, collapse_grey=False)
        except ImageReadError:
            old = None
        if old is not None and old.dtype == image.dtype and np.array_equal(old, image):
            return
        backup_existing(path)
    atomic_write_bytes(path, _encode_image(image, suffix))


def _check_image(image: Any, instances: FrameInstances, index: int) -> np.ndarray:
    image = np.asarray(image)
    if not (image.dtype == bool or np.issubdtype(image.dtype, np.integer)
            or np.issubdtype(image.dtype, np.floating)):
        raise InvalidImageError(f"sample {index}: image must hold integer or floating-point "
                                f"pixels; got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise InvalidImageError(f"sample {index}: image must be (H, W) or (H, W, 3) RGB, "
                                f"got shape {image.shape}")
    if image.shape[:2] != instances.shape:
        raise DatasetFormatError(f"sample {index}: image is {image.shape[:2]} but its "
                                 f"instance masks are {instances.shape}")
    return image


def write_dataset(
    out_dir: str | os.PathLike,
    samples: Iterable[Sample],
    categories: dict[int, str] | None = None,
    *,
    overwrite: bool = False,
    info: dict | None = None,
) -> Path:
    """Write samples as a blastoseg dataset folder.

    Parameters
    ----------
    out_dir
        Dataset folder (created if needed).
    samples
        Samples to write, consumed once (a generator is fine). Image ids and annotation ids
        are assigned 1, 2, ... in order. A sample with ``image=None`` must name an existing
        ``file_name`` inside ``out_dir`` (annotation-only export of images already there);
        its height and width come from the instance masks.
    categories
        Category id -> name; default ``{1: "blastomere"}``. Every class id used must be named.
    overwrite
        Replace an existing ``annotations.json``; the previous one is kept as
        ``annotations.json.<timestamp>.bak``. Image files that would change are backed up the
        same way.
    info
        Extra keys for the COCO ``info`` block.

    Returns
    -------
    Path
        Path of the written ``annotations.json``.

    Raises
    ------
    DatasetFormatError
        ``annotations.json`` exists and ``overwrite`` is False, a class id has no category,
        a file name is invalid or duplicated, or an annotation-only sample's image is missing.
    """
    root = Path(out_dir)
    ann_path = root / ANNOTATIONS_FILE
    if ann_path.exists() and not overwrite:
        raise DatasetFormatError(
            f"{ann_path} already exists; choose another output folder, or allow overwriting "
            f"(--overwrite on the command line), which keeps the old file as a .bak")
    cats = dict(DEFAULT_CATEGORIES if categories is None else categories)
    cats = {int(k): str(v) for k, v in cats.items()}
    root.mkdir(parents=True, exist_ok=True)

    images: list[dict] = []
    annotations: list[dict] = []
    written: dict[str, int] = {}
    for index, sample in enumerate(samples):
        if not isinstance(sample, Sample):
            raise TypeError(f"sample {index}: expected a blastoseg.io.Sample; got "
                            f"{type(sample).__name__}")
        image_id = index + 1
        inst = sample.instances
        unknown = sorted(set(int(c) for c in inst.class_ids) - set(cats))
        if unknown:
            raise DatasetFormatError(f"sample {index}: class id(s) {unknown} have no category "
                                     f"name; pass categories= with names for them")
        image = None if sample.image is None else _check_image(sample.image, inst, index)
        if sample.file_name is None:
            if image is None:
                raise DatasetFormatError(f"sample {index}: needs an image or a file_name")
            file_name = f"images/{image_id:06d}{lossless_suffix(image)}"
        else:
            file_name = _resolve_file_name(sample.file_name, image, index)
        target = root / file_name
        if image is None:
            if not target.is_file():
                raise DatasetFormatError(f"sample {index}: image is None but {target} does "
                                         f"not exist; give the pixels or copy the file there")
        else:
            if file_name in written:
                raise DatasetFormatError(f"samples {written[file_name]} and {index} both "
                                         f"write {file_name!r}")
            written[file_name] = index
            _write_image(target, image, PurePosixPath(file_name).suffix.lower()
                         .replace(".tiff", ".tif"))

        h, w = inst.shape
        entry: dict[str, Any] = {"id": image_id, "file_name": file_name, "height": int(h),
                                 "width": int(w)}
        for key in _OPTIONAL_IMAGE_KEYS:
            value = getattr(sample, key)
            if value is not None:
                entry[key] = float(value) if key == "pixel_size_um" else int(value)
        clash = sorted(_RESERVED_IMAGE_KEYS.intersection(sample.extra))
        if clash:
            raise DatasetFormatError(f"sample {index}: extra keys {clash} are reserved; use "
                                     f"the Sample fields of the same name")
        entry.update(sample.extra)
        images.append(entry)
        annotations.extend(_annotations_for(inst, image_id, len(annotations) + 1))

    base_info = {"description": "blastoseg dataset", "format": "blastoseg-coco",
                 "format_version": FORMAT_VERSION}
    doc = {
        "info": {**base_info, **(info or {})},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k, "name": v} for k, v in sorted(cats.items())],
    }
    try:
        text = json.dumps(doc, indent=1, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"metadata for {ann_path} is not JSON-serialisable: {exc}"
                                 ) from None
    if ann_path.exists():
        if ann_path.read_text(encoding="utf-8") == text + "\n":
            return ann_path  # identical content: nothing to back up or rewrite
        backup_existing(ann_path)
    atomic_write_text(ann_path, text + "\n")
    return ann_path


def _annotations_for(inst: FrameInstances, image_id: int, first_id: int) -> list[dict]:
    out = []
    for i in range(len(inst)):
        rle = encode_mask(inst.masks[i])
        ann: dict[str, Any] = {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": int(inst.class_ids[i]),
            "segmentation": rle,
            "bbox": rle_bbox(rle),
            "area": rle_area(rle),
            "iscrowd": 0,
        }
        if inst.visible_masks is not None:
            ann["visible_segmentation"] = encode_mask(inst.visible_masks[i])
        score = float(inst.scores[i])
        if score != 1.0:
            ann["score"] = score
        if inst.track_ids is not None:
            ann["track_id"] = int(inst.track_ids[i])
        out.append(ann)
    return out


# --- reading --------------------------------------------------------------------------------

class Dataset:
    """A dataset folder opened for reading; images and masks are decoded on access.

    Attributes
    ----------
    root
        The dataset folder.
    images
        Image entries (dicts, as in ``annotations.json``) in file order.
    categories
        Category id -> name.
    info
        The COCO ``info`` block.
    """

    def __init__(self, root: Path, doc: dict, ann_path: Path) -> None:
        self.root = root
        self.path = ann_path
        self.info: dict = dict(doc.get("info") or {})
        self.images: list[dict] = doc["images"]
        self.categories: dict[int, str] = parse_categories(doc, ann_path)
        self._annotations: dict[int, list[dict]] = {e["id"]: [] for e in self.images}
        for ann in sorted(doc["annotations"], key=lambda a: a["id"]):
            self._annotations[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> Sample:
        entry = self.images[i]
        return Sample(
            image=self.load_image(i),
            instances=self.instances(i),
            file_name=entry["file_name"],
            extra=self.extra(i),
            **{k: entry.get(k) for k in _OPTIONAL_IMAGE_KEYS},
        )

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, images={len(self)}, categories={self.categories})"

    def extra(self, i: int) -> dict:
        """The image entry's keys beyond the reserved ones (a sample's ``extra``)."""
        return {k: v for k, v in self.images[i].items() if k not in _RESERVED_IMAGE_KEYS}

    def annotations(self, i: int) -> list[dict]:
        """The raw COCO annotations of image ``i``, ordered by annotation id."""
        return self._annotations[self.images[i]["id"]]

    def load_image(self, i: int) -> np.ndarray:
        """Pixels of image ``i`` exactly as stored (colour files are not collapsed)."""
        entry = self.images[i]
        path = self.root / entry["file_name"]
        if not path.is_file():
            raise DatasetFormatError(f"{self.path}: image {entry['id']} refers to "
                                     f"{entry['file_name']!r}, which does not exist in "
                                     f"{self.root}")
        image = read_image(path, collapse_grey=False)
        if image.shape[:2] != (entry["height"], entry["width"]):
            raise DatasetFormatError(f"{path}: image is {image.shape[:2]} but "
                                     f"{self.path.name} says height={entry['height']}, "
                                     f"width={entry['width']}")
        return image

    def instances(self, i: int) -> FrameInstances:
        """Decode the instances of image ``i``.

        Visible masks are returned only if every annotation of the image has one, track ids
        only if every annotation has one; ``occlusion`` is the ground-truth overlap map
        (pixels inside two or more amodal masks) and ``meta`` the entry's extra keys.
        """
        entry = self.images[i]
        h, w = entry["height"], entry["width"]
        anns = self.annotations(i)
        masks = np.zeros((len(anns), h, w), dtype=bool)
        vis = np.zeros_like(masks)
        has_vis = bool(anns) and all("visible_segmentation" in a for a in anns)
        for j, ann in enumerate(anns):
            where = f"{self.path}: annotation {ann['id']}"
            try:
                masks[j] = decode_segmentation(ann["segmentation"], h, w)
                if has_vis:
                    vis[j] = decode_segmentation(ann["visible_segmentation"], h, w)
            except (ValueError, TypeError, KeyError) as exc:
                raise DatasetFormatError(f"{where}: cannot decode segmentation: {exc}") from None
        has_tracks = bool(anns) and all(a.get("track_id") is not None for a in anns)
        return FrameInstances(
            masks=masks,
            class_ids=np.array([a["category_id"] for a in anns], dtype=np.int64),
            scores=np.array([a.get("score", 1.0) for a in anns], dtype=np.float32),
            visible_masks=vis if has_vis else None,
            occlusion=(masks.sum(axis=0) >= 2).astype(np.float32),
            track_ids=np.array([a["track_id"] for a in anns]) if has_tracks else None,
            meta=self.extra(i),
        )

    def videos(self) -> dict[int, list[int]]:
        """Dataset indices of each ``video_id``, ordered by ``frame_index``."""
        out: dict[int, list[int]] = {}
        for i, entry in enumerate(self.images):
            if entry.get("video_id") is not None:
                out.setdefault(entry["video_id"], []).append(i)
        for idx in out.values():
            idx.sort(key=lambda k: (self.images[k].get("frame_index") is None,
                                    self.images[k].get("frame_index") or 0, k))
        return out


def read_dataset(folder: str | os.PathLike) -> Dataset:
    """Open a dataset folder (or its ``annotations.json``) and validate its structure.

    Raises
    ------
    DatasetFormatError
        Missing folder or file, invalid JSON, missing keys, duplicate ids, annotations of
        unknown images or categories, RLE sizes that differ from the image size.
    """
    path = Path(folder)
    if path.is_file() and path.suffix.lower() == ".json":
        root, ann_path = path.parent, path
    else:
        root, ann_path = path, path / ANNOTATIONS_FILE
        if not root.is_dir():
            raise DatasetFormatError(f"{root}: dataset folder does not exist")
        if not ann_path.is_file():
            raise DatasetFormatError(f"{root}: no {ANNOTATIONS_FILE} in this folder; is it "
                                     f"a blastoseg/COCO dataset?")
    try:
        doc = json.loads(ann_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{ann_path}: invalid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{ann_path}: cannot read ({exc})") from None
    validate_coco(doc, ann_path)
    return Dataset(root, doc, ann_path)
