"""The Segment widget's embryo circle: a Shapes layer "<image>: embryo framing" that shows,
on the displayed frame, the embryo the localiser found (cyan), its guess when it is unsure
(orange), or the circle the user drew or moved (green); and the ``embryo=`` a run passes
to the predictor.

The circle of a frame is computed when the frame is first displayed (the classical
localiser, ~20-50 ms; no model is needed) and replaced by what a Segment run used (the
results' ``meta["embryo"]``). Moving, resizing or drawing an ellipse in the layer is a user
circle for the displayed frame or for the whole stack (the widget's "circle applies to");
a non-circular ellipse becomes the circle of equal area. Deleting a user circle, or
"Reset framing", goes back to the localiser. The frame-by-frame state lives in
:class:`blastoseg.napari.embryo_circle.FramingState`; this module only keeps the layer and
that state in step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from blastoseg.napari import _ui
from blastoseg.napari import embryo_circle as ec
from blastoseg.predict.embryo_box import EmbryoBox

ROLE = "embryo framing"
DEBOUNCE_MS = 120
SCOPES = ("this frame", "whole stack")
UNITS = ("px", "um")
SEGMENT, SEGMENT_ANYWAY = "Segment", "Segment anyway"


def _is_framing_of(layer, image_name: str) -> bool:
    """Whether ``layer`` is the embryo-framing layer of the image called ``image_name``."""
    tag = _ui.layer_tag(layer)
    return tag.get("role") == ROLE and tag.get("image") == image_name


class FramingLayer:
    """Keeps one image layer's :class:`FramingState` and its Shapes layer in step.

    ``locate(frame, diameter_px)`` returns the localiser's raw box for a 2D frame.
    ``options()`` returns the form's current ``(localise, diameter_px, whole_stack, plane)``
    (diameter_px None = automatic; plane an int or None = the displayed plane).
    """

    def __init__(self, viewer, image, axes: str, locate: Callable, options: Callable,
                 on_change: Callable[[], None] | None = None) -> None:
        self.viewer, self.image, self.axes = viewer, image, axes
        self.locate, self.options = locate, options
        self.on_change = on_change or (lambda: None)
        lead = len(axes)
        shape = tuple(image.data.shape)
        self.image_shape = (int(shape[lead]), int(shape[lead + 1]))
        n_frames = int(shape[0]) if "T" in axes else 1
        self.n_z = int(shape[axes.index("Z")]) if "Z" in axes else 1
        self.state = ec.FramingState(self.image_shape, n_frames)
        self.edge_width = max(2.0, round(min(self.image_shape) / 150.0))
        self._syncing = False
        self._shown: dict[int, str] = {}  # frame -> kind of the circle in the layer
        self.layer = None
        for la in viewer.layers:  # a framing layer left by an earlier widget: keep its circles
            if _is_framing_of(la, image.name):
                self._adopt(la)
                break

    # --- where ------------------------------------------------------------------------------
    def frame_index(self) -> int:
        """The displayed frame of the image (0 without a T axis)."""
        return _ui.layer_index(self.viewer, self.image, 0) if "T" in self.axes else 0

    def frame(self, t: int) -> np.ndarray:
        """The 2D frame ``t`` as the localiser sees it (on the chosen or displayed plane)."""
        data = self.image.data
        if self.axes == "":
            return np.asarray(data)
        if self.axes == "T":
            return np.asarray(data[t])
        plane = self.options()[3]
        z_axis = self.axes.index("Z")
        z = plane if isinstance(plane, int) else _ui.layer_index(self.viewer, self.image, z_axis)
        return np.asarray(data[z] if self.axes == "Z" else data[t, z])

    # --- the layer ------------------------------------------------------------------------------
    def ensure_layer(self):
        """The framing Shapes layer of the image (found in the viewer, or made)."""
        if self.layer is not None and self.layer in self.viewer.layers:
            return self.layer
        for la in self.viewer.layers:
            if _is_framing_of(la, self.image.name):
                self.layer = la
                break
        else:
            scale, translate = ec.shapes_placement(
                self.axes, self.n_z, tuple(self.image.scale)[: len(self.axes) + 2],
                tuple(self.image.translate)[: len(self.axes) + 2])
            self._syncing = True
            try:
                self.layer = self.viewer.add_shapes(
                    ndim=len(self.axes) + 2, name=f"{self.image.name}: {ROLE}", scale=scale,
                    translate=translate, face_color="transparent",
                    edge_color=ec.COLOURS["given"], edge_width=self.edge_width,
                    features={"frame": np.zeros(0, int), "kind": np.array([], dtype=object)},
                    metadata={"blastoseg": {"role": ROLE, "image": self.image.name}})
                self.layer.current_edge_color = ec.COLOURS["given"]
                self.layer.current_face_color = "transparent"
                self.layer.current_edge_width = self.edge_width
                self.layer.mode = "select"  # drag the circle straight away
            finally:
                self._syncing = False
        self._shown = {}
        self.layer.metadata["blastoseg"]["owner"] = id(self)  # the widget that follows it
        self.layer.events.data.connect(self._on_data)
        return self.layer

    def _adopt(self, layer) -> None:
        """Take over the user's circles of a framing layer left by an earlier widget."""
        kinds = list(layer.features["kind"]) if len(layer.features) else []
        for i, kind in enumerate(kinds):
            if kind not in ("given", "whole stack"):
                continue
            try:
                lead, cx, cy, r = ec.circle_of_shape(layer.data[i], layer.shape_type[i])
                box = EmbryoBox.from_circle(cx, cy, r, self.image_shape)
            except ValueError:
                continue
            t = int(np.clip(lead[0], 0, self.state.n_frames - 1)) if "T" in self.axes else 0
            self.state.set_user(t, box, whole_stack=kind == "whole stack")

    def _set_shapes(self, items: list[tuple[int, EmbryoBox, str]]) -> None:
        layer = self.ensure_layer()
        self._syncing = True
        try:
            layer.selected_data = set()
            layer.data = []
            layer.features = {"frame": np.zeros(0, int), "kind": np.array([], dtype=object)}
            if items:
                layer.add_ellipses(
                    np.stack([ec.ellipse_vertices(b, ec.lead_of(self.axes, t))
                              for t, b, _ in items]),
                    edge_color=[ec.COLOURS[k] for _, _, k in items],
                    edge_width=self.edge_width, face_color="transparent")
                layer.features = {"frame": np.array([t for t, _, _ in items], int),
                                  "kind": np.array([k for _, _, k in items], dtype=object)}
            layer.feature_defaults = {"frame": -1, "kind": "drawn"}
            layer.current_edge_color = ec.COLOURS["given"]
        finally:
            self._syncing = False
        self._shown = {t: k for t, _, k in items}

    def render(self) -> None:
        """Rebuild the layer from the state: one circle per frame that has one."""
        localise = self.options()[0]
        t_now = self.frame_index()
        frames = sorted(set(self.state.auto) | set(self.state.user) | {t_now})
        items = []
        for t in frames:
            box, kind = self.state.circle(t, localise)
            if box is not None:
                items.append((t, box, kind))
        self._set_shapes(items)

    # --- localising -----------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> tuple[EmbryoBox | None, str | None]:
        """Show the displayed frame's circle, localising it first when it has none yet (or
        ``force``); returns (box, kind) of that frame."""
        localise, diameter_px = self.options()[:2]
        t = self.frame_index()
        if localise and (force or t not in self.state.auto):
            self.state.set_auto(t, self.locate(self.frame(t), diameter_px))
        box, kind = self.state.circle(t, localise)
        if self.layer is not None and self.layer not in self.viewer.layers and not force:
            return box, kind  # the user removed the layer: "Show framing" brings it back
        if force or self.layer is None or self.layer not in self.viewer.layers or (
                t in self._shown and self._shown[t] != kind):
            self.render()
        elif t not in self._shown and box is not None:
            self._add_one(t, box, kind)
        return box, kind

    def _add_one(self, t: int, box: EmbryoBox, kind: str) -> None:
        """Add frame ``t``'s circle (cheaper than a rebuild after a long run)."""
        layer = self.layer
        self._syncing = True
        try:
            layer.feature_defaults = {"frame": t, "kind": kind}
            layer.add_ellipses(ec.ellipse_vertices(box, ec.lead_of(self.axes, t)),
                               edge_color=ec.COLOURS[kind], edge_width=self.edge_width,
                               face_color="transparent")
            layer.feature_defaults = {"frame": -1, "kind": "drawn"}
        finally:
            self._syncing = False
        self._shown[t] = kind

    def forget_localisation(self) -> None:
        """Drop what the localiser found (the diameter or the localisation switch changed)."""
        self.state.auto.clear()
        self.state.flagged.clear()
        self.state.confirmed.clear()

    def reset(self) -> None:
        """Back to automatic framing on every frame."""
        self.state.clear_user()
        self.refresh(force=True)
        self.on_change()

    # --- runs ---------------------------------------------------------------------------------
    def results(self, first_frame: int, metas: list[dict]) -> list[int]:
        """Show what a run used (results' meta, from frame ``first_frame`` on); returns the
        frames where the localiser was unsure."""
        unsure = []
        for i, meta in enumerate(metas):
            if meta:
                self.state.update_from_result(first_frame + i, meta)
                if meta.get("embryo_unsure"):
                    unsure.append(first_frame + i)
        self.render()
        return unsure

    # --- user edits -----------------------------------------------------------------------------
    def _on_data(self, event) -> None:
        if (self._syncing or self.layer is None
                or _ui.layer_tag(self.layer).get("owner") != id(self)):
            return
        action = str(getattr(event, "action", ""))
        if action not in ("added", "changed", "removed"):
            return
        from qtpy.QtCore import QTimer

        # napari is still inside its own mouse handler: change the layer after it returns
        indices = tuple(getattr(event, "data_indices", ()) or ())
        QTimer.singleShot(0, lambda: self.apply_edit(action, indices))

    def apply_edit(self, action: str, indices: tuple = ()) -> str | None:
        """Turn an edit of the layer into user circles; returns a message for the user when
        the shape could not be used."""
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return None
        whole_stack = self.options()[2]
        kinds = list(layer.features["kind"]) if len(layer.features) else []
        message = None
        if action == "removed":
            present = {int(f) for f in layer.features["frame"]} if kinds else set()
            for t, kind in list(self._shown.items()):
                if t not in present:
                    if kind == "whole stack":
                        self.state.stack = None
                    self.state.clear_user(t)
        else:
            if action == "added":
                todo = [i for i, k in enumerate(kinds) if k == "drawn"]
            else:
                todo = [i for i in indices if 0 <= i < len(layer.data)]
            for i in todo:
                try:
                    lead, cx, cy, r = ec.circle_of_shape(layer.data[i], layer.shape_type[i])
                    t = int(lead[0]) if "T" in self.axes else 0
                    t = int(np.clip(t, 0, self.state.n_frames - 1))
                    box = EmbryoBox.from_circle(cx, cy, r, self.image_shape)
                except ValueError as exc:
                    message = str(exc)
                    continue
                self.state.set_user(t, box, whole_stack)
        self.render()
        self.on_change()
        if message:
            from napari.utils.notifications import show_warning

            show_warning(f"embryo circle not changed: {message}")
        return message

    # --- what a run passes -------------------------------------------------------------------
    def predictor_kwargs(self, frames: range) -> dict:
        """``embryo``, ``diameter_px`` and ``localise`` for the predictor (only those that
        differ from its defaults)."""
        localise, diameter_px = self.options()[:2]
        kwargs: dict = {}
        embryo = self.state.embryo_for(frames, localise)
        if embryo is not None:
            kwargs["embryo"] = embryo
        if diameter_px is not None:
            kwargs["diameter_px"] = float(diameter_px)
        if not localise:
            kwargs["localise"] = False
        return kwargs

    def remove(self) -> None:
        """Stop following the layer (another image was chosen); the layer stays."""
        if self.layer is not None:
            try:
                self.layer.events.data.disconnect(self._on_data)
            except (TypeError, ValueError, RuntimeError):
                pass


def describe(t: int, box: EmbryoBox | None, kind: str | None, localise: bool,
             has_frames: bool) -> str:
    """The widget's framing line for the displayed frame."""
    where = f"frame {t}: " if has_frames else ""
    note = getattr(box, "note", "") if kind in ("found", "unsure") else ""
    note = f" ({note})" if note else ""
    if kind is None:
        return (f"{where}localisation off: each frame is segmented whole (draw an ellipse in "
                "the framing layer to frame the embryo yourself)" if not localise
                else f"{where}not located yet")
    if kind == "given":
        return f"{where}your circle (r {box.radius:.0f} px) frames the embryo"
    if kind == "whole stack":
        return f"{where}your circle (r {box.radius:.0f} px) frames every frame of the stack"
    if kind == "found":
        return (f"{where}embryo found (r {box.radius:.0f} px, confidence {box.confidence:.2f})"
                f"{note}; if the cyan circle is wrong, drag it onto the embryo or draw one")
    if not box.found:
        return (f"{where}no embryo found{note}: the orange circle is the whole frame. Draw an "
                "ellipse around the embryo, or click 'Segment anyway' to use the whole frame")
    return (f"{where}not sure where the embryo is (confidence {box.confidence:.2f}){note}: "
            "the orange circle is a guess. Drag it onto the embryo or draw one, or click "
            "'Segment anyway' to use the guess")
