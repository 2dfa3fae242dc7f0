"""Nucleus masks that go with a dataset's images (the target of the SE-U-Net nuclei head).

Where the nucleus mask of image ``i`` is found, first match wins:

1. the image entry's extra key ``nuclei_file``: a path relative to the dataset folder (a mask
   or label image, ``> 0`` = nucleus). Naming a file that does not exist is an error.
2. a sibling of the image named ``<image stem>_nuclei.tif`` (``.tiff``, ``.png``), e.g. the
   ISBI 2014 set's ``images/2.tif`` + ``images/2_nuclei.tif``.
3. none: the image has no nucleus annotation (``None``; training skips the nuclei head's loss
   for that sample, e.g. synthetic embryos).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from blastoseg.errors import DatasetFormatError, ImageReadError
from blastoseg.io.dataset import Dataset
from blastoseg.io.images import read_image

__all__ = ["NUCLEI_KEY", "NUCLEI_SUFFIXES", "load_nuclei", "nuclei_path"]

#: image-entry key naming the nucleus mask file (relative to the dataset folder)
NUCLEI_KEY = "nuclei_file"
#: extensions tried, in order, for the sibling ``<stem>_nuclei<ext>`` file
NUCLEI_SUFFIXES = (".tif", ".tiff", ".png")


def nuclei_path(dataset: Dataset, i: int) -> Path | None:
    """The nucleus-mask file of image ``i``, or None when the image has none.

    Raises
    ------
    DatasetFormatError
        The entry's ``nuclei_file`` is not a string or names a file that does not exist.
    """
    entry = dataset.images[i]
    name = entry.get(NUCLEI_KEY)
    if name is not None:
        if not isinstance(name, str) or not name:
            raise DatasetFormatError(f"{dataset.path}: image {entry.get('id')} has "
                                     f"{NUCLEI_KEY}={name!r}; expected a file path relative "
                                     f"to {dataset.root}")
        path = dataset.root / name
        if not path.is_file():
            raise DatasetFormatError(f"{dataset.path}: image {entry.get('id')} names "
                                     f"{NUCLEI_KEY}={name!r}, which does not exist in "
                                     f"{dataset.root}; fix the path or remove the key")
        return path
    image = dataset.root / entry["file_name"]
    for suffix in NUCLEI_SUFFIXES:
        path = image.with_name(f"{image.stem}_nuclei{suffix}")
        if path.is_file():
            return path
    return None


def load_nuclei(dataset: Dataset, i: int, *, fill_holes: bool = False) -> np.ndarray | None:
    """The nucleus mask of image ``i`` as bool (H, W), or None when it has none.

    Parameters
    ----------
    dataset
        An opened dataset (:func:`blastoseg.io.read_dataset`).
    i
        Index of the image in ``dataset.images``.
    fill_holes
        Fill enclosed holes, for masks drawn as nucleus contours (some ISBI 2014 ground-truth
        files) rather than filled regions.

    Raises
    ------
    DatasetFormatError
        The file is missing (when named by ``nuclei_file``), cannot be read, holds a stack,
        or its size differs from the image's.
    """
    path = nuclei_path(dataset, i)
    if path is None:
        return None
    entry = dataset.images[i]
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        raise DatasetFormatError(f"nucleus mask of image {entry.get('id')} "
                                 f"({entry['file_name']}) cannot be read: {exc}") from None
    if arr.ndim == 3:  # true-colour mask: any non-zero channel is nucleus
        arr = arr.any(axis=-1)
    expected = (entry["height"], entry["width"])
    if arr.shape != expected:
        raise DatasetFormatError(f"{path}: nucleus mask is {arr.shape[0]}x{arr.shape[1]} "
                                 f"(HxW) but image {entry.get('id')} ({entry['file_name']}) is "
                                 f"{expected[0]}x{expected[1]}; the mask must match the image")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DatasetFormatError(f"{path}: nucleus mask has dtype {arr.dtype}; expected a "
                                 f"numeric mask or label image")
    mask = np.asarray(arr) > 0
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    return mask
