"""The semantic classes of an oocyte (S3) and how they live in the dataset format.

The dataset format stores objects (COCO annotations); an oocyte's ground truth is a class per
pixel. Each region is one annotation whose category is its class: the zona (a ring), the
perivitelline space with the first polar body (a ring with blobs), the ooplasm (a disc), and
every inclusion, vacuole and smooth-ER cluster as its own annotation. The class map is the
annotations painted in increasing class id (later classes lie on top: an inclusion inside the
ooplasm is an inclusion), so category ids double as painting order.

The ids are fixed: a model's output channel ``k`` is class ``k`` (0 is background).
"""

from __future__ import annotations

import numpy as np

from blastoseg.instances import FrameInstances

__all__ = ["CLASS_COLORS", "CLASS_NAMES", "INCLUSION", "N_CLASSES", "OOCYTE_CATEGORIES",
           "OOPLASM", "PVS", "SER", "VACUOLE", "ZONA", "class_ids_of", "class_map",
           "instances_from_class_map"]

BACKGROUND, ZONA, PVS, OOPLASM, INCLUSION, VACUOLE, SER = range(7)
#: class id -> name, background included (the names are the dataset's category names)
CLASS_NAMES = {BACKGROUND: "background", ZONA: "zona", PVS: "perivitelline_space",
               OOPLASM: "ooplasm", INCLUSION: "inclusion", VACUOLE: "vacuole",
               SER: "ser_cluster"}
N_CLASSES = len(CLASS_NAMES)
#: the dataset's categories (every class but the background)
OOCYTE_CATEGORIES = {k: v for k, v in CLASS_NAMES.items() if k != BACKGROUND}
#: display colours (napari legend, figures): RGBA in [0, 1]
CLASS_COLORS = {
    BACKGROUND: (0.0, 0.0, 0.0, 0.0),
    ZONA: (0.35, 0.55, 1.0, 0.55),
    PVS: (0.3, 0.95, 0.95, 0.45),
    OOPLASM: (0.55, 0.9, 0.35, 0.35),
    INCLUSION: (1.0, 0.15, 0.15, 1.0),
    VACUOLE: (1.0, 0.85, 0.1, 1.0),
    SER: (0.85, 0.3, 1.0, 1.0),
}


def class_ids_of(categories: dict[int, str]) -> dict[int, int]:
    """A dataset's category id -> oocyte class id, by name; ValueError naming any category
    that is not an oocyte class (a blastomere dataset is not an oocyte dataset)."""
    by_name = {name: k for k, name in CLASS_NAMES.items()}
    unknown = sorted(set(categories.values()) - set(by_name))
    if unknown:
        raise ValueError(f"categories {unknown} are not oocyte classes "
                         f"({', '.join(OOCYTE_CATEGORIES.values())})")
    return {int(c): by_name[name] for c, name in categories.items()}


def class_map(instances: FrameInstances, categories: dict[int, str] | None = None
              ) -> np.ndarray:
    """(H, W) uint8 class map of an oocyte's annotations (painted in increasing class id).

    ``categories`` (a dataset's id -> name) maps the annotations' category ids to the oocyte
    classes by name, so a dataset that numbers its categories differently reads right;
    without it the ids are taken as the oocyte class ids. A category that is not an oocyte
    class raises ValueError (a blastomere dataset is not an oocyte dataset).
    """
    out = np.zeros(instances.shape, np.uint8)
    ids = np.asarray(instances.class_ids, int)
    if categories is not None:
        to_class = class_ids_of(categories)
        ids = np.array([to_class[int(c)] for c in ids], int)
    elif len(ids) and (ids.min() < 1 or ids.max() >= N_CLASSES):
        raise ValueError(f"class ids {sorted(set(ids.tolist()))} are not oocyte classes "
                         f"1..{N_CLASSES - 1}")
    for k in np.argsort(ids, kind="stable"):
        out[instances.masks[k]] = ids[k]
    return out


def instances_from_class_map(labels: np.ndarray) -> FrameInstances:
    """The objects of a class map (a corrected napari Labels layer, a prediction), as the
    dataset stores them: the zona, the perivitelline space and the ooplasm one region each,
    every connected inclusion, vacuole and SER cluster its own. ``class_map`` of the result
    gives ``labels`` back exactly. Values outside the classes raise ValueError."""
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a class map is 2D, got shape {labels.shape}")
    bad = sorted(set(np.unique(labels).tolist()) - set(CLASS_NAMES))
    if bad:
        raise ValueError(f"values {bad} are not oocyte classes 0..{N_CLASSES - 1}")
    masks, ids = [], []
    for k in (ZONA, PVS, OOPLASM):
        if (labels == k).any():
            masks.append(labels == k)
            ids.append(k)
    for k in (INCLUSION, VACUOLE, SER):
        lab, n = ndi.label(labels == k)
        for j in range(1, n + 1):
            masks.append(lab == j)
            ids.append(k)
    if not masks:
        return FrameInstances.empty(labels.shape)
    return FrameInstances(masks=np.stack(masks), class_ids=np.array(ids))
