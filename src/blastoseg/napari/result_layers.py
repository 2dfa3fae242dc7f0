"""Segmentation results <-> napari LayerData tuples, and back; pure functions, no Qt.

A run of the segmentation widget on one image layer gives one *group* of layers, all named
``"<group>: ..."`` and tagged in their metadata (``metadata["blastoseg"]["group"]`` and
``["role"]``), so that re-running replaces exactly the previous run's layers:

- ``<group>: occlusion``: the predicted occlusion probability (uint8, 0-255), magma, additive,
  hidden by default (tick its eye to see it);
- ``<group>: visible``: the visible (modal) labels, one label per pixel;
- ``<group>: amodal k``: the amodal masks packed into the fewest non-overlapping Labels layers
  (see ``docs/napari_layers.md``), shown as contours, editable with napari's label tools;
- ``<group>: centroids``: one point per cell with its label value as text.

Labels layers take the cell palette of :mod:`.cell_colours` (neighbours stay distinct); a
centroid is a white badge with a black number, legible on dark and bright images alike.

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
from blastoseg.napari._ui import layer_tag
from blastoseg.napari.cell_colours import cell_colormap
from blastoseg.napari.compressed_stack import CompressedStack
from blastoseg.napari.layer_conversion import (
    LabelLayerPacker,
    _label_values,
    iter_label_layers_to_instances,
)

__all__ = [
    "AMODAL_CONTOUR",
    "FrameView",
    "ROLES",
    "Placement",
    "ResultLayerBuilder",
    "amodal_groups",
    "apply_display",
    "centroid_points",
    "instances_from_layers",
    "iter_instances_from_layers",
    "result_layer_data",
    "result_layers_of",
]

ROLES = ("occlusion", "visible", "amodal", "centroids")
AMODAL_CONTOUR = 2  # outline width of the amodal Labels layers, in screen pixels
#: a centroid's badge (napari's Points text has no outline: black digits on a white disc read
#: on any image): its diameter as a fraction of the frame's long side (about 20 screen pixels
#: when the frame fits the canvas), and the digits' size as a fraction of the diameter.
#: Both are in data units, so the badge zooms as one piece (napari's canvas_size_limits
#: would keep it a constant size on screen, but then draws the disc black: napari 0.9)
BADGE_FRACTION, DIGITS_FRACTION = 1 / 25, 0.42


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

    def new_stack(self, n_frames: int, hw: tuple[int, int], dtype, compressed: bool):
        """An empty result array for ``n_frames`` frames in this placement's layer layout
        (a leading frame axis even for a single 2D frame: see :meth:`finish`)."""
        shape = (n_frames, 1, *hw) if self.axes == "TZ" else (n_frames, *hw)
        return CompressedStack(shape, dtype) if compressed else np.zeros(shape, dtype=dtype)

    def finish(self, stack):
        """The layer data of a stack made by :meth:`new_stack`."""
        return np.asarray(stack)[0] if self.axes == "" else stack

    def plane(self, data, local: int) -> np.ndarray:
        """The (H, W) plane of result frame ``local`` in layer data of this placement, read
        without materialising the other frames."""
        if self.axes == "":
            return np.asarray(data)
        return np.asarray(data[local, 0] if self.axes == "TZ" else data[local])

    def set_plane(self, data, local: int, plane: np.ndarray) -> None:
        """Write the (H, W) plane of result frame ``local`` into layer data of this placement."""
        if self.axes == "":
            data[...] = plane
        elif self.axes == "TZ":
            data[local, 0] = plane
        else:
            data[local] = plane

    def n_frames(self, data) -> int:
        return 1 if self.axes == "" else int(np.shape(data)[0])

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


def _meta(group: str, role: str, placement: Placement, tracked: bool, extra: dict) -> dict:
    return {"blastoseg": {**extra, "group": group, "role": role,
                          "placement": placement.to_dict(), "labels_are_track_ids": tracked}}


class ResultLayerBuilder:
    """Builds the result layers frame by frame, so a segmentation worker can add each frame as
    it is predicted and drop it (a 500-frame time-lapse is never held as instance masks).

    Stacks of more than one frame are held as :class:`CompressedStack` arrays (each frame
    zlib-compressed; napari reads and paints them frame by frame), so the result layers cost a
    few percent of the image instead of several times it (docs/napari_layers.md, Memory).

    Parameters
    ----------
    n_frames, shape
        Number of result frames and the (H, W) of each.
    group, placement, extra_meta
        As for :func:`result_layer_data`.
    compressed
        Force compressed (True) or plain (False) arrays; default: compressed for stacks.
    """

    def __init__(self, n_frames: int, shape: tuple[int, int], group: str,
                 placement: Placement | None = None, extra_meta: dict | None = None,
                 compressed: bool | None = None) -> None:
        if n_frames < 1:
            raise InvalidImageError("no frames in the result")
        self.placement = placement or Placement(axes="" if n_frames == 1 else "T")
        if self.placement.axes in ("", "Z") and n_frames != 1:
            raise InvalidImageError(
                f"{n_frames} result frames cannot sit on a single image frame")
        self.n_frames, self.shape, self.group = int(n_frames), tuple(shape), group
        self.extra = dict(extra_meta or {})
        self.compressed = n_frames > 1 if compressed is None else bool(compressed)
        pl, c = self.placement, self.compressed
        self._occ = pl.new_stack(n_frames, self.shape, np.uint8, c)  # uint8: 1/4 of float32
        self._vis = pl.new_stack(n_frames, self.shape, np.uint8, c)
        self._packer = LabelLayerPacker(
            n_frames, self.shape, new_stack=lambda shp, dt: pl.new_stack(shp[0], shp[1:], dt, c))
        self._tracked: list[bool] = []
        self._points: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.counts: list[int] = [0] * n_frames

    def add(self, t: int, inst: FrameInstances) -> None:
        """Add result frame ``t`` (0-based within this result)."""
        if inst.shape != self.shape:
            raise InvalidImageError(f"result frame {t} has shape {inst.shape}, not {self.shape}")
        values = _label_values(inst)
        if inst.occlusion is not None:
            self._occ[t] = np.clip(np.rint(np.asarray(inst.occlusion) * 255), 0, 255
                                   ).astype(np.uint8)
        if len(values) and int(values.max()) > np.iinfo(self._vis.dtype).max:
            if self.compressed:
                self._vis.promote(np.uint16)
            else:
                self._vis = self._vis.astype(np.uint16)
        vis = np.zeros(self.shape, dtype=self._vis.dtype)
        masks = inst.visible_masks if inst.visible_masks is not None else inst.masks
        for mask, value in zip(masks, values, strict=True):
            vis[mask & (vis == 0)] = value
        self._vis[t] = vis
        self._packer.add(t, inst)
        self._tracked.append(inst.track_ids is not None)
        c = inst.centroids
        ok = ~np.isnan(c).any(axis=1) if len(c) else np.zeros(0, dtype=bool)
        self._points.append((np.full(int(ok.sum()), t), c[ok].reshape(-1, 2), values[ok]))
        self.counts[t] = len(inst)

    def layer_data(self) -> list[tuple]:
        """napari LayerData tuples, bottom to top: occlusion (image), visible (labels), amodal
        1..k (labels), centroids (points)."""
        group, pl = self.group, self.placement
        tracked = bool(self._tracked) and all(self._tracked)
        common = pl.layer_kwargs()

        def meta(role: str) -> dict:
            return _meta(group, role, pl, tracked, self.extra)

        out: list[tuple] = [
            (pl.finish(self._occ), {
                **common, "name": f"{group}: occlusion", "colormap": "magma",
                "blending": "additive", "opacity": 0.4, "contrast_limits": (0, 255),
                # hidden until asked for: drawn over the image it hid the embryo (issue 18)
                "visible": False,
                "metadata": meta("occlusion")}, "image"),
            (pl.finish(self._vis), {
                **common, "name": f"{group}: visible", "opacity": 0.35, "visible": False,
                "colormap": cell_colormap(), "metadata": meta("visible")}, "labels")]
        for k, labels in enumerate(self._packer.result()):
            out.append((pl.finish(labels), {
                **common, "name": f"{group}: amodal {k + 1}", "opacity": 1.0,
                "colormap": cell_colormap(), "metadata": meta("amodal")}, "labels"))
        parts = self._points or [(np.zeros(0), np.zeros((0, 2)), np.zeros(0, dtype=np.int64))]
        out.append(centroid_points(np.concatenate([p[0] for p in parts]),
                                   np.concatenate([p[1] for p in parts]),
                                   np.concatenate([p[2] for p in parts]), group, pl,
                                   meta("centroids"), self.shape))
        return out


def result_layer_data(frames: Sequence[FrameInstances], group: str,
                      placement: Placement | None = None, extra_meta: dict | None = None,
                      compressed: bool | None = None) -> list[tuple]:
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
    compressed
        See :class:`ResultLayerBuilder` (default: compressed arrays for stacks).

    Returns
    -------
    list of (data, kwargs, layer_type)
        occlusion (image), visible (labels), amodal 1..k (labels), centroids (points).
        Amodal layers should be shown as contours: call :func:`apply_display` on each added
        layer (napari takes no ``contour`` argument when creating a layer).
    """
    if not frames:
        raise InvalidImageError("no frames in the result")
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):
        raise InvalidImageError("all frames must have the same shape to form a stack")
    builder = ResultLayerBuilder(len(frames), shape, group, placement, extra_meta, compressed)
    for t, f in enumerate(frames):
        builder.add(t, f)
    return builder.layer_data()


def centroid_points(t_local: np.ndarray, yx: np.ndarray, values: np.ndarray, group: str,
                    placement: Placement, metadata: dict | None = None,
                    frame_shape: tuple[int, int] = (500, 500)) -> tuple:
    """Points LayerData of cell centroids with their label values as text: a white badge
    with a black number on it, sized for frames of ``frame_shape`` (:data:`BADGE_FRACTION`)."""
    coords = placement.point_coords(np.asarray(t_local, dtype=float),
                                    np.asarray(yx, dtype=float).reshape(-1, 2))
    badge = max(8.0, max(frame_shape) * BADGE_FRACTION)
    kwargs = {
        **placement.layer_kwargs(), "name": f"{group}: centroids", "ndim": placement.ndim,
        "features": {"label": np.asarray(values, dtype=np.int64)},
        "text": {"string": "{label}", "color": "black", "size": badge * DIGITS_FRACTION,
                 "anchor": "center", "scaling": True},
        "size": badge, "face_color": "white", "border_color": "black", "border_width": 0.1,
        "symbol": "disc",
        "metadata": metadata or {"blastoseg": {"group": group, "role": "centroids",
                                               "placement": placement.to_dict()}},
    }
    return coords, kwargs, "points"


# --- layers in a viewer (duck-typed: anything with .name, .metadata, .data) -----------------

def result_layers_of(layers: Iterable, group: str) -> list:
    """The layers of one result group (what a re-run replaces)."""
    return [la for la in layers
            if layer_tag(la).get("group") == group and layer_tag(la).get("role") in ROLES]


def amodal_groups(layers: Iterable) -> dict[str, list]:
    """Amodal Labels layers by group, in layer order.

    Layers from the segmentation widget carry their group in the metadata; other amodal layers
    (e.g. ground truth from the synthetic-embryo widget or a dataset) are grouped by name
    without the trailing layer number ("ground truth amodal 2" -> "ground truth amodal").
    """
    groups: dict[str, list] = {}
    for la in layers:
        tag = layer_tag(la)
        if tag.get("role") != "amodal":
            continue
        group = tag.get("group") or re.sub(r"\s*\d+$", "", str(la.name)) or str(la.name)
        groups.setdefault(group, []).append(la)
    return groups


def placement_of(layer) -> Placement:
    """The placement stored with a result layer; a plain (H, W) or (T, H, W) layer otherwise."""
    d = layer_tag(layer).get("placement")
    if d:
        return Placement.from_dict(d)
    ndim = np.ndim(layer.data) if not hasattr(layer.data, "ndim") else layer.data.ndim
    return Placement(axes={2: "", 3: "T"}.get(ndim, "TZ"))


class FrameView:
    """(T, H, W)-like read-only view of a result layer's data, frame by frame, whatever its
    placement ((H, W), (T, H, W) or (T, 1, H, W)); nothing is materialised until indexed."""

    def __init__(self, data, placement: Placement) -> None:
        self.data, self.placement = data, placement
        n = placement.n_frames(data)
        self.shape = (n, *placement.plane(data, 0).shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t) -> np.ndarray:
        return self.placement.plane(self.data, int(t))


def iter_instances_from_layers(amodal_layers: Sequence):
    """Like :func:`instances_from_layers` but returns a generator of FrameInstances that reads
    the layers one frame at a time (long, compressed stacks are never materialised)."""
    if not amodal_layers:
        raise InvalidImageError("no amodal label layers to read")
    placement = placement_of(amodal_layers[0])
    tracked = bool(layer_tag(amodal_layers[0]).get("labels_are_track_ids", False))
    views = [FrameView(la.data, placement) for la in amodal_layers]
    return placement.first_frame, iter_label_layers_to_instances(
        views, labels_are_track_ids=True), tracked


def instances_from_layers(amodal_layers: Sequence) -> tuple[int, list[FrameInstances], bool]:
    """Unpack a group's amodal layers into (first frame index, FrameInstances per frame, tracked).

    Instance order follows the label values; track ids are ``label - 1`` for every result, so
    a cell's label value (what napari shows) is recoverable as ``track_id + 1``.
    """
    first, frames, tracked = iter_instances_from_layers(amodal_layers)
    return first, list(frames), tracked


def apply_display(layer) -> None:
    """Display settings napari does not take at creation: contours for amodal layers."""
    if layer_tag(layer).get("role") == "amodal":
        layer.contour = AMODAL_CONTOUR
