"""Which labels and which nuclei go with which image, among the layers a viewer holds.

With two images open, the Probability-map preview used to pick the first labels it found,
often another image's (issue 18 item 12). Layers that belong to an image say so: a result's
layers carry ``source_image`` (or their group, the image's name) in their blastoseg tag; a
file's labels are named after it (``2_labels``, ``<dataset> amodal 1``); a nucleus mask
follows the dataset convention ``<image stem>_nuclei`` (:mod:`blastoseg.io.nuclei`). Failing
a name, labels of the image's size are likelier to be its own than labels of another size.
Duck-typed layers (``.name``, ``.metadata``, ``.data``), no Qt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from blastoseg.io.nuclei import NUCLEI_SUFFIXES
from blastoseg.napari._ui import layer_tag

__all__ = ["NUCLEI_ROLE", "belongs_to", "is_nuclei_name", "nuclei_name_for", "rank_for_image"]

#: the blastoseg tag role of a nucleus mask opened by the reader
NUCLEI_ROLE = "nuclei"
_NUCLEI_STEM = "_nuclei"


def is_nuclei_name(name: str) -> bool:
    """A layer or file name of a nucleus mask (``<stem>_nuclei``, with or without one of the
    extensions the datasets use)."""
    name = str(name)
    for ext in NUCLEI_SUFFIXES:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return name.endswith(_NUCLEI_STEM) and len(name) > len(_NUCLEI_STEM)


def nuclei_name_for(image_name: str) -> str:
    """The name a nucleus mask of ``image_name`` has (the dataset convention)."""
    return f"{image_name}{_NUCLEI_STEM}"


def belongs_to(layer, image) -> int:
    """How surely ``layer`` belongs to ``image``: 3 its tag names the image, 2 its name starts
    with the image's name, 1 it has the image's frame size, 0 none of these."""
    if image is None:
        return 0
    tag = layer_tag(layer)
    name = str(image.name)
    if name in (tag.get("source_image"), tag.get("group"), tag.get("source")):
        return 3
    if str(layer.name).startswith(name):
        return 2
    return 1 if _frame_size(layer) == _frame_size(image) else 0


def rank_for_image(candidates: Sequence[tuple[str, Sequence]], image) -> list[str]:
    """Keys of ``candidates`` ((key, its layers) pairs, in the viewer's order), the most
    likely ones of ``image`` first (a stable sort: ties keep the viewer's order)."""
    scored = [(-max((belongs_to(la, image) for la in layers), default=0), i, key)
              for i, (key, layers) in enumerate(candidates)]
    return [key for *_, key in sorted(scored)]


def _frame_size(layer) -> tuple[int, ...]:
    shape = tuple(np.shape(layer.data)) if not hasattr(layer.data, "shape") else \
        tuple(layer.data.shape)
    rgb = bool(getattr(layer, "rgb", False))
    return shape[-3:-1] if rgb else shape[-2:]
