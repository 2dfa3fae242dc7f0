"""The labeling session behind the "Label blastomeres" widget, without Qt: an
:class:`~blastoseg.annotate.AnnotationProject` shown as amodal Labels layers, kept in sync.

- The project is the record; the layers are its view, in the representation of
  docs/napari_layers.md (the fewest non-overlapping Labels layers, contour mode), so napari's own
  paint / erase / fill / polygon tools and their undo work on every cell.
- Painting changes layers; :meth:`LabelingSession.sync_frame` reads a frame back into the
  project and autosaves. Operations (delete, merge, split, ellipse, complete shape, propose) go
  through :mod:`blastoseg.annotate.edits` on the frame's instances, are written back into the
  layers (cells keep their layer where they can), and can be undone with :meth:`undo`.
- Label values are ids + 1 (track ids), stable across edits, so a cell keeps its colour.

Layers are duck-typed (anything with ``.data``, ``.metadata``, ``.name``): the tests drive a
session with plain objects, the widget with napari layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from blastoseg.annotate import edits
from blastoseg.annotate.project import AnnotationProject
from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.napari.cell_colours import cell_colormap
from blastoseg.napari.compressed_stack import CompressedStack
from blastoseg.napari.layer_conversion import (
    LabelLayerPacker,
    _frame_from_planes,
    pack_frame,
)
from blastoseg.napari.result_layers import Placement

__all__ = ["LabelingSession", "annotation_group", "with_ids"]

ROLE = "amodal"
UNDO_DEPTH = 30


def annotation_group(image_name: str) -> str:
    """The group (layer-name prefix) of an annotation project shown over ``image_name``:
    "annotated <image>", so its layers differ from a result's ("<image>: amodal 1") at their
    start; napari elides long layer names in the middle, which hid "(annotation)" there."""
    return f"annotated {image_name}"


def with_ids(inst: FrameInstances) -> FrameInstances:
    """The instances with track ids (0..N-1 when they had none), so label values are stable."""
    if inst.track_ids is not None:
        return inst
    return edits.relabel_consecutive(inst)


@dataclass
class LabelingSession:
    """One annotation project on screen.

    Attributes
    ----------
    project
        The annotation project (a dataset folder).
    group
        Name prefix of the layers (``"<group>: amodal k"``) and their metadata group.
    layers
        The amodal layers' data arrays, in order (the widget keeps the napari layers in step).
    """

    project: AnnotationProject
    group: str
    layers: list = field(default_factory=list)
    placement: Placement = field(default_factory=Placement)
    _undo: list[tuple[int, FrameInstances]] = field(default_factory=list)
    _max_id: int | None = None

    # --- building ------------------------------------------------------------------------
    @classmethod
    def start(cls, project: AnnotationProject, group: str) -> LabelingSession:
        """Pack every frame of the project into label stacks (compressed for time-lapses)."""
        n = project.n_frames
        if n < 1:
            raise InvalidImageError("the annotation project has no frames")
        shape = tuple(np.shape(project.image(0))[:2])
        compressed = n > 1
        packer = LabelLayerPacker(
            n, shape, new_stack=(lambda s, d: CompressedStack(s, d)) if compressed else np.zeros)
        for t in range(n):
            packer.add(t, with_ids(project.instances(t)))
        layers = packer.result()
        if not compressed:
            layers = [np.asarray(la)[0] for la in layers]
        return cls(project, group, layers, Placement(axes="T" if n > 1 else ""))

    def layer_kwargs(self, k: int) -> dict:
        """napari kwargs of amodal layer ``k`` (0-based)."""
        return {"name": f"{self.group}: amodal {k + 1}", "opacity": 1.0,
                "colormap": cell_colormap(),
                "metadata": {"blastoseg": {
                    "group": self.group, "role": ROLE, "placement": self.placement.to_dict(),
                    "labels_are_track_ids": True, "annotation_project": str(self.project.root)}}}

    def new_layer_data(self):
        """An empty array for one more amodal layer (when a frame needs more layers)."""
        n = self.project.n_frames
        shape = tuple(np.shape(self.project.image(0))[:2])
        dtype = np.dtype(self.layers[0].dtype) if self.layers else np.dtype(np.uint8)
        return self.placement.new_stack(n, shape, dtype, n > 1) if n > 1 else \
            np.zeros(shape, dtype=dtype)

    # --- frame <-> layers ----------------------------------------------------------------
    def planes(self, t: int) -> list[np.ndarray]:
        return [self.placement.plane(la, t) for la in self.layers]

    def read_frame(self, t: int) -> FrameInstances:
        """Frame ``t``'s instances as the layers hold them now (the user's painting included)."""
        return _frame_from_planes(self.planes(t), t, labels_are_track_ids=True)

    def write_frame(self, t: int, inst: FrameInstances) -> int:
        """Write ``inst`` into the layers of frame ``t``; cells keep their layer where they can.

        Returns how many layers were appended (the widget then adds them to the viewer).
        """
        inst = with_ids(inst)
        values = inst.track_ids.astype(np.int64) + 1
        if len(values) and int(values.max()) > np.iinfo(np.uint16).max:
            raise InvalidImageError(f"cell id {int(values.max())} is too large for a label")
        preferred = {}
        for k, plane in enumerate(self.planes(t)):
            for v in np.unique(plane):
                if v:
                    preferred[int(v)] = k
        need_dtype = np.uint8 if not len(values) or values.max() <= 255 else np.uint16
        planes, _ = pack_frame(inst, preferred, dtype=need_dtype)
        added = 0
        while len(self.layers) < len(planes):
            self.layers.append(self.new_layer_data())
            added += 1
        for k, la in enumerate(self.layers):
            if need_dtype == np.uint16 and la.dtype == np.uint8:
                raise InvalidImageError("more than 255 cell ids: relabel the frame first")
            plane = planes[k] if k < len(planes) else np.zeros_like(planes[0])
            self.placement.set_plane(la, t, plane.astype(la.dtype))
        return added

    def sync_frame(self, t: int, save: bool = True) -> bool:
        """Read frame ``t`` back from the layers into the project (after painting); returns
        whether it changed. Saves at once when ``save`` (autosave is debounced by the caller)."""
        self.project.set_instances(t, self.read_frame(t))
        changed = t in self.project.dirty_frames
        if save:
            self.project.flush()
        return changed

    # --- operations ----------------------------------------------------------------------
    def apply(self, t: int, op: Callable[[FrameInstances], FrameInstances]) -> int:
        """Run an edit on frame ``t``: read it from the layers, apply, write back, record it in
        the project (and save), remember the previous state for :meth:`undo`.
        Returns the number of layers appended."""
        current = self.read_frame(t)
        new = op(current)
        self._undo.append((t, current))
        del self._undo[:-UNDO_DEPTH]
        added = self.write_frame(t, new)
        self.project.set_instances(t, self.read_frame(t))
        self.project.flush()
        return added

    def undo(self) -> int | None:
        """Undo the last operation (painting is undone by napari's own undo); returns its frame."""
        if not self._undo:
            return None
        t, previous = self._undo.pop()
        self.write_frame(t, previous)
        self.project.set_instances(t, self.read_frame(t))
        self.project.flush()
        return t

    def free_id(self, t: int | None = None) -> int:
        """A new id, unused in every frame (a new cell never merges with a tracked one);
        frame ``t``'s layers are checked too, for cells painted but not yet synced."""
        if self._max_id is None:
            top = -1
            for t in range(self.project.n_frames):
                ids = self.project.instances(t).track_ids
                if ids is not None and len(ids):
                    top = max(top, int(ids.max()))
            self._max_id = top
        for plane in self.planes(t) if t is not None else ():
            self._max_id = max(self._max_id, int(plane.max()) - 1)
        self._max_id += 1
        return self._max_id

    def empty_layer_for(self, t: int) -> tuple[int, int]:
        """Index of a layer that is empty in frame ``t`` (to paint a new cell without touching
        others) and how many layers were appended to get one."""
        for k, plane in enumerate(self.planes(t)):
            if not plane.any():
                return k, 0
        self.layers.append(self.new_layer_data())
        return len(self.layers) - 1, 1

    def delete(self, t: int, ids: Sequence[int]) -> int:
        return self.apply(t, lambda inst: edits.delete_instances(inst, list(ids)))

    def merge(self, t: int, ids: Sequence[int]) -> int:
        return self.apply(t, lambda inst: edits.merge_instances(inst, list(ids)))

    def split(self, t: int, cell: int, line) -> int:
        return self.apply(t, lambda inst: edits.split_instance(inst, cell, line))

    def add_mask(self, t: int, mask: np.ndarray, replace: int | None = None) -> int:
        """Add ``mask`` as a new cell (or as the new mask of cell ``replace``)."""
        if replace is not None:
            return self.apply(t, lambda inst: edits.replace_mask(inst, replace, mask))
        new_id = self.free_id(t)
        return self.apply(t, lambda inst: edits.add_instance(inst, mask, track_id=new_id))

    def cells(self, t: int) -> list[dict]:
        """One row per cell of frame ``t``: id, label value, area (px), layer index."""
        rows = []
        for k, plane in enumerate(self.planes(t)):
            values, areas = np.unique(plane[plane > 0], return_counts=True)
            rows += [{"id": int(v) - 1, "label": int(v), "area": int(a), "layer": k}
                     for v, a in zip(values, areas, strict=True)]
        return sorted(rows, key=lambda r: r["label"])
