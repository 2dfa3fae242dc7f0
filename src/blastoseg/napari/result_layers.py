"""Segmentation results <-> napari LayerData tuples, and back; pure functions, no Qt.

A run of the segmentation widget on one image layer gives one *group* of layers, all named
``"<group>: ..."`` and tagged in their metadata (``metadata["blastoseg"]["group"]`` and
``["role"]``), so that re-running replaces exactly the previous run's layers:

- ``<group>: occlusion``: the predicted occlusion probability (uint8, 0-255), magma, additive;
- ``<group>: visible``: the visible (modal) labels, one label per pixel;
- ``<group>: amodal k``: the amodal masks packed into the fewest non-overlapping Labels layers
  (see ``docs/napari_layers.md``), shown as contours, editable with napari's label tools;
- ``<group>: centroids``: one point per cell with its label value as text.

Each instance has the same label value in the amodal and visible layers (its 1-based index in
its frame, or ``track_id + 1`` for tracked results).

*Placement*: the result layers line up with the image layer. A (T, Y, X) time-lapse gives
(T, Y, X) layers; a run on the current frame of a stack gives (1, Y, X) layers translated to
that frame (so they show on that frame only); a (T, Z, Y, X) stack with focal planes gives
(T, 1, Y, X) layers whose single Z plane is stretched over all planes (scale n_z), so the
outlines show whatever focal plane is displayed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.napari.layer_conversion import instances_to_label_layers, label_layers_to_instances

__all__ = [
    "AMODAL_CONTOUR",
    "ROLES",
    "Placement",
    "amodal_groups",
    "apply_display",
    "centroid_points",
    "instances_from_layers",
    "result_layer_data",
    "result_layers_of",
]

ROLES = ("occlusion", "visible", "amodal", "centroids")
AMODAL_CONTOUR = 2  # outline width of the amodal Labels layers, in screen pixels


@dataclass
class Placement:
    """Where a result sits relative to its image layer.

    Attributes
    ----------
    axes
        The image layer's non-spatial axes: ``""`` (one 2D frame), ``"T"``, ``"Z"`` or ``"TZ"``.
    n_z
        Number of focal planes (``Z`` in axes), stretched over by the results.
    first_frame
        T index of the first result frame (a run on the current frame of a stack).
    scale, translate
        The image layer's scale and translate (one value per image axis, or empty: unit/zero).
    """

    axes: str = ""
    n_z: int = 1
    first_frame: int = 0
    scale: tuple[float, ...] = ()
    translate: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.axes not in ("", "T", "Z", "TZ"):
            raise InvalidImageError(f"unknown image axes {self.axes!r}")
        ndim = len(self.axes) + 2
        self.scale = tuple(float(s) for s in self.scale) or (1.0,) * ndim
        self.translate = tuple(float(s) for s in self.translate) or (0.0,) * ndim
        if len(self.scale) != ndim or len(self.translate) != ndim:
            raise InvalidImageError(
                f"scale/translate of length {len(self.scale)}/{len(self.translate)} do not fit "
                f"an image with axes {self.axes + 'YX'!r}")

    @property
    def ndim(self) -> int:
        return len(self.axes) + 2

    def layer_kwargs(self) -> dict:
        """scale and translate of a result layer, so that it lines up with the image."""
        scale, translate = list(self.scale), list(self.translate)
        for i, ax in enumerate(self.axes):
            if ax == "T":
                translate[i] += scale[i] * self.first_frame
            else:  # one plane stretched over all n_z planes: it shows on every plane
                translate[i] += scale[i] * (self.n_z - 1) / 2
                scale[i] *= self.n_z
        return {"scale": tuple(scale), "translate": tuple(translate)}

    def to_layer(self, stack: np.ndarray) -> np.ndarray:
        """(T, H, W) result array -> layer data of this placement."""
        if self.axes == "":
            return stack[0]
        if self.axes == "TZ":
            return stack[:, None]
        return stack  # "T": (T, H, W); "Z": (1, H, W), the one plane stretched over Z

    def from_layer(self, data: np.ndarray) -> np.ndarray:
        """Layer data of this placement -> (T, H, W)."""
        data = np.asarray(data)
        if self.axes == "":
            return data[None]
        if self.axes == "TZ":
            return data[:, 0]
        return data

    def point_coords(self, t_local: np.ndarray, yx: np.ndarray) -> np.ndarray:
        """Points layer coordinates (data space) of centroids in result frames ``t_local``."""
        lead = {"": [], "T": [t_local], "Z": [np.zeros_like(t_local)],
                "TZ": [t_local, np.zeros_like(t_local)]}[self.axes]
        return np.column_stack([*lead, yx[:, 0], yx[:, 1]]).astype(float).reshape(-1, self.ndim)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Placement:
        return cls(**{k: (tuple(v) if k in ("scale", "translate") else v) for k, v in d.items()})


def _label_values(inst: FrameInstances) -> np.ndarray:
    if inst.track_ids is not None:
        return inst.track_ids.astype(np.int64) + 1
    return np.arange(1, len(inst) + 1, dtype=np.int64)


def _meta(group: str, role: str, placement: Placement, tracked: bool, extra: dict) -> dict:
    return {"blastoseg": {**extra, "group": group, "role": role,
                          "placement": placement.to_dict(), "labels_are_track_ids": tracked}}


def result_layer_data(frames: Sequence[FrameInstances], group: str,
                      placement: Placement | None = None, extra_meta: dict | None = None
                      ) -> list[tuple]:
    """napari LayerData tuples of a segmentation result, bottom to top.

    Parameters
    ----------
    frames
        One FrameInstances per result frame (a single frame is a list of one).
    group
        Name prefix and metadata tag shared by the layers (usually the image layer's name).
    placement
        How the layers line up with the image layer (default: one 2D frame, or a (T, Y, X)
        stack when there are several frames).
    extra_meta
        Added to every layer's ``metadata["blastoseg"]`` (model, device, focal planes, ...).

    Returns
    -------
    list of (data, kwargs, layer_type)
        occlusion (image), visible (labels), amodal 1..k (labels), centroids (points).
        Amodal layers should be shown as contours: call :func:`apply_display` on each added
        layer (napari takes no ``contour`` argument when creating a layer).
    """
    if not frames:
        raise InvalidImageError("no frames in the result")
    if placement is None:
        placement = Placement(axes="" if len(frames) == 1 else "T")
    if placement.axes in ("", "Z") and len(frames) != 1:
        raise InvalidImageError(f"{len(frames)} result frames cannot sit on a single image frame")
    extra = dict(extra_meta or {})
    tracked = all(f.track_ids is not None for f in frames)
    common = placement.layer_kwargs()
    shape = frames[0].shape
    out: list[tuple] = []

    occ = np.zeros((len(frames), *shape), dtype=np.uint8)  # uint8: a quarter of float32
    for t, f in enumerate(frames):
        if f.occlusion is not None:
            occ[t] = np.clip(np.rint(f.occlusion * 255), 0, 255).astype(np.uint8)
    out.append((placement.to_layer(occ), {
        **common, "name": f"{group}: occlusion", "colormap": "magma", "blending": "additive",
        "opacity": 0.4, "contrast_limits": (0, 255),
        "metadata": _meta(group, "occlusion", placement, tracked, extra)}, "image"))

    max_value = max((int(_label_values(f).max()) for f in frames if len(f)), default=0)
    dtype = np.uint8 if max_value <= 255 else np.uint16
    vis = np.zeros((len(frames), *shape), dtype=dtype)
    for t, f in enumerate(frames):
        masks = f.visible_masks if f.visible_masks is not None else f.masks
        for mask, value in zip(masks, _label_values(f), strict=True):
            vis[t][mask & (vis[t] == 0)] = value
    out.append((placement.to_layer(vis), {
        **common, "name": f"{group}: visible", "opacity": 0.35, "visible": False,
        "metadata": _meta(group, "visible", placement, tracked, extra)}, "labels"))

    for k, labels in enumerate(instances_to_label_layers(list(frames))):
        out.append((placement.to_layer(labels), {
            **common, "name": f"{group}: amodal {k + 1}", "opacity": 1.0,
            "metadata": _meta(group, "amodal", placement, tracked, extra)}, "labels"))

    t_local, yx, values = [], [], []
    for t, f in enumerate(frames):
        c = f.centroids
        ok = ~np.isnan(c).any(axis=1)
        t_local.append(np.full(int(ok.sum()), t))
        yx.append(c[ok])
        values.append(_label_values(f)[ok])
    out.append(centroid_points(np.concatenate(t_local), np.concatenate(yx),
                               np.concatenate(values), group, placement,
                               _meta(group, "centroids", placement, tracked, extra)))
    return out


def centroid_points(t_local: np.ndarray, yx: np.ndarray, values: np.ndarray, group: str,
                    placement: Placement, metadata: dict | None = None) -> tuple:
    """Points LayerData of cell centroids with their label values as text."""
    coords = placement.point_coords(np.asarray(t_local, dtype=float),
                                    np.asarray(yx, dtype=float).reshape(-1, 2))
    kwargs = {
        **placement.layer_kwargs(), "name": f"{group}: centroids", "ndim": placement.ndim,
        "features": {"label": np.asarray(values, dtype=np.int64)},
        "text": {"string": "{label}", "color": "white", "size": 12,
                 "translation": np.array([0.0] * (placement.ndim - 2) + [-10.0, 0.0])},
        "size": 6, "face_color": "white", "border_color": "black", "symbol": "disc",
        "metadata": metadata or {"blastoseg": {"group": group, "role": "centroids",
                                               "placement": placement.to_dict()}},
    }
    return coords, kwargs, "points"


# --- layers in a viewer (duck-typed: anything with .name, .metadata, .data) -----------------

def _tag(layer) -> dict:
    meta = getattr(layer, "metadata", None) or {}
    tag = meta.get("blastoseg") if isinstance(meta, dict) else None
    return tag if isinstance(tag, dict) else {}


def result_layers_of(layers: Iterable, group: str) -> list:
    """The layers of one result group (what a re-run replaces)."""
    return [la for la in layers if _tag(la).get("group") == group and _tag(la).get("role") in ROLES]


def amodal_groups(layers: Iterable) -> dict[str, list]:
    """Amodal Labels layers by group, in layer order.

    Layers from the segmentation widget carry their group in the metadata; other amodal layers
    (e.g. ground truth from the synthetic-embryo widget or a dataset) are grouped by name
    without the trailing layer number ("ground truth amodal 2" -> "ground truth amodal").
    """
    groups: dict[str, list] = {}
    for la in layers:
        tag = _tag(la)
        if tag.get("role") != "amodal":
            continue
        group = tag.get("group") or re.sub(r"\s*\d+$", "", str(la.name)) or str(la.name)
        groups.setdefault(group, []).append(la)
    return groups


def placement_of(layer) -> Placement:
    """The placement stored with a result layer; a plain (H, W) or (T, H, W) layer otherwise."""
    d = _tag(layer).get("placement")
    if d:
        return Placement.from_dict(d)
    ndim = np.ndim(layer.data) if not hasattr(layer.data, "ndim") else layer.data.ndim
    return Placement(axes={2: "", 3: "T"}.get(ndim, "TZ"))


def instances_from_layers(amodal_layers: Sequence) -> tuple[int, list[FrameInstances], bool]:
    """Unpack a group's amodal layers into (first frame index, FrameInstances per frame, tracked).

    Instance order follows the label values; track ids are ``label - 1`` for every result, so
    a cell's label value (what napari shows) is recoverable as ``track_id + 1``.
    """
    if not amodal_layers:
        raise InvalidImageError("no amodal label layers to read")
    placement = placement_of(amodal_layers[0])
    tracked = bool(_tag(amodal_layers[0]).get("labels_are_track_ids", False))
    arrays = [placement.from_layer(la.data) for la in amodal_layers]
    frames = label_layers_to_instances(arrays, labels_are_track_ids=True)
    return placement.first_frame, frames, tracked


def apply_display(layer) -> None:
    """Display settings napari does not take at creation: contours for amodal layers."""
    if _tag(layer).get("role") == "amodal":
        layer.contour = AMODAL_CONTOUR
