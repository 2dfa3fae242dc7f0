"""The Segment widget's framing rows (embryo diameter and its unit, "frames are already
crops", "circle applies to", "steady framing over time", Show / Reset framing, the framing
line) and what they do: the
embryo circle of the chosen image (:class:`._segment_framing.FramingLayer`) follows the image
and the frame slider, becomes the predictor's ``embryo`` / ``diameter_px`` / ``localise`` and
shows what each run used; an unsure localiser makes the first click on Segment ask.
"""

from __future__ import annotations

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui
from blastoseg.napari import embryo_circle as ec
from blastoseg.napari._segment_framing import (
    DEBOUNCE_MS,
    SCOPES,
    SEGMENT,
    SEGMENT_ANYWAY,
    UNITS,
    FramingLayer,
    describe,
)
from blastoseg.predict.steady_framing import DEFAULT_WINDOW


class FramingFormMixin:
    """The Segment widget's framing rows and their logic (the widget provides ``viewer``,
    ``image``, ``plane``, ``model``, ``run_button``, ``status``, ``worker``, ``_predictor``
    (the last one loaded) and ``_pending``)."""

    def _framing_state(self) -> None:
        self._framings: dict[int, FramingLayer] = {}
        self._framing: FramingLayer | None = None
        self._armed = None  # (image layer id, frame) whose unsure guess one click confirms
        self._timer = None
        self._card_framing: dict = {}

    def _connect_framing(self) -> None:
        for w in (self.diameter, self.diameter_unit, self.crops):
            w.changed.connect(self._on_framing_options_changed)
        self.model.changed.connect(self._on_framing_options_changed)
        self.show_button.changed.connect(lambda: self.show_framing(force=True))
        self.reset_button.changed.connect(self.reset_framing)
        self.viewer.dims.events.current_step.connect(self._on_step)

    def _framing_form(self, saved: dict) -> None:
        """The framing rows: diameter (px or um), "already crops", the scope of a user's
        circle, Show / Reset framing, and a line that says what the circle is."""
        from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton

        self.diameter = FloatSpinBox(min=0.0, max=100000.0, step=1.0,
                                     value=float(saved.get("diameter", 0.0)))
        self.diameter_unit = ComboBox(choices=UNITS, value=saved.get("diameter_unit") if
                                      saved.get("diameter_unit") in UNITS else "px")
        self._diameter_row = Container(widgets=[self.diameter, self.diameter_unit],
                                       layout="horizontal", labels=False,
                                       label="embryo diameter")
        self._diameter_row.margins = (0, 0, 0, 0)
        self.diameter.tooltip = self.diameter_unit.tooltip = (
            "the embryo's outer diameter (zona included), for every frame of the image, like "
            "cellpose's cell diameter; 0 = found on each frame. In um it needs the pixel size "
            "(the image's pixel_size_um metadata or its layer scale)")
        self.crops = CheckBox(text="frames are already crops (no localisation)",
                              value=bool(saved.get("already_crops", False)))
        self.crops.tooltip = ("each frame is given to the model whole: use it for frames cut "
                              "around the embryo already")
        self.scope = ComboBox(label="circle applies to", choices=SCOPES,
                              value=saved.get("framing_scope") if saved.get("framing_scope")
                              in SCOPES else SCOPES[0])
        self.scope.tooltip = (
            "where a circle you move, resize or draw in the 'embryo framing' layer is used: "
            "on the displayed frame only, or on every frame. An ellipse becomes the circle of "
            "the same area; delete your circle or click 'Reset framing' to go back to the "
            "automatic one")
        self.steady = CheckBox(text="steady framing over time",
                               value=bool(saved.get("steady_framing", False)))
        self.steady.tooltip = (
            f"for a time-lapse of one embryo: each frame is framed with the median of the "
            f"embryo circles found in the {DEFAULT_WINDOW} frames around it, so one badly "
            "framed frame does not change its cells (docs/localisation.md). The circles a run "
            "used are shown after it. Not for a stack of different embryos")
        self.show_button = PushButton(text="Show framing")
        self.show_button.tooltip = "find the embryo on the displayed frame again"
        self.reset_button = PushButton(text="Reset framing")
        self.reset_button.tooltip = "forget your circles: the embryo is found on every frame"
        self._framing_buttons = Container(widgets=[self.show_button, self.reset_button],
                                          layout="horizontal", labels=False)
        self._framing_buttons.margins = (0, 0, 0, 0)
        self.framing_info = Label(value="", label="framing")
        self.framing_info.native.setWordWrap(True)
        self.framing_info.native.setMinimumWidth(200)

    # --- the embryo circle ---------------------------------------------------------------------
    def _follow_image(self, layer, axes: str) -> None:
        """Show the framing of the chosen image (each image keeps its own circles)."""
        self._disarm()
        for key in [k for k, f in self._framings.items() if f.image not in self.viewer.layers]:
            self._framings.pop(key).remove()
        if layer is None or (axes == "" and layer.ndim != 2):
            self._framing = None
            self.framing_info.value = ""
            return
        if id(layer) not in self._framings:
            self._framings[id(layer)] = FramingLayer(
                self.viewer, layer, axes, self._locate, self._framing_options,
                on_change=self._on_circle_changed)
        self._framing = self._framings[id(layer)]
        self.show_framing()

    def _pixel_size(self, layer) -> dict:
        units = getattr(layer, "units", None)
        return {"scale": float(layer.scale[-1]), "scale_unit": units[-1] if units else None,
                "pixel_size_um": (layer.metadata or {}).get("pixel_size_um")}

    def _framing_options(self) -> tuple[bool, float | None, bool, int | None]:
        """(localise, diameter in px or None, whole stack, focal plane or None)."""
        layer = self.image.value
        diameter_px = None
        if layer is not None:
            diameter_px = ec.diameter_in_pixels(self.diameter.value, self.diameter_unit.value,
                                                **self._pixel_size(layer))
        plane = self.plane.value if isinstance(self.plane.value, int) else None
        localise = not self.crops.value and self._model_framing()[0]
        return (localise, diameter_px, self.scope.value == SCOPES[1] and self.scope.enabled,
                plane)

    def _model_framing(self) -> tuple[bool, float]:
        """(use_localisation, min_confidence) of the chosen model's card (a model trained on
        crops does not localise; below min_confidence it frames the whole frame)."""
        model = self.model.value
        if model not in self._card_framing:
            loc = _ui.card_number(model, "amodal", "framing", "use_localisation", 1.0) > 0.5
            conf = _ui.card_number(model, "amodal", "framing", "min_confidence",
                                   ec.MIN_CONFIDENCE)
            self._card_framing[model] = (loc, conf)
        return self._card_framing[model]

    def _locate(self, frame: np.ndarray, diameter_px: float | None):
        """The localiser's raw box (its guess even when unsure); the loaded predictor's own
        localiser when it has one and is idle, else the classical one (no model needed)."""
        predictor = self._predictor
        if (predictor is not None and self.worker is None and hasattr(predictor, "locate_guess")
                and predictor.entry.name == self.model.value):
            return predictor.locate_guess(frame, diameter_px=diameter_px)
        from blastoseg.napari.torch_import import import_predictor_safely
        from blastoseg.predict.localise import locate_embryo

        import_predictor_safely()  # the learned localiser needs torch: import it guarded
        return locate_embryo(frame, radius_px=None if diameter_px is None else diameter_px / 2)

    def show_framing(self, force: bool = False) -> tuple:
        """Show the displayed frame's embryo circle (found again with ``force``); returns
        (box, kind) of that frame, (None, None) without an image or on a bad input."""
        framing = self._framing
        if framing is None:
            return None, None
        framing.state.min_confidence = self._model_framing()[1]
        try:
            box, kind = framing.refresh(force=force)
        except BlastosegError as exc:
            self.framing_info.value = f"error: {exc}"
            return None, None
        t = framing.frame_index()
        if self._armed is not None and self._armed != (id(framing.image), t):
            self._disarm()
        self.framing_info.value = describe(t, box, kind, self._framing_options()[0],
                                           "T" in framing.axes)
        return box, kind

    def reset_framing(self) -> None:
        """Forget the user's circles: back to the localiser on every frame."""
        if self._framing is not None:
            self._framing.reset()
            self.show_framing()

    def _on_circle_changed(self) -> None:
        self._disarm()
        self.show_framing()

    def _on_framing_options_changed(self, *_args) -> None:
        if self._framing is not None:
            self._framing.forget_localisation()
        self._disarm()
        self.show_framing(force=True)

    def _on_step(self, *_args) -> None:
        from qtpy.QtCore import QTimer

        if self._framing is None or self._framing.image not in self.viewer.layers:
            return
        if self._timer is None:
            self._timer = QTimer(self.native)
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.show_framing)
        self._timer.start(DEBOUNCE_MS)

    def _disarm(self) -> None:
        self._armed = None
        self.run_button.text = SEGMENT

    def _framing_checked(self) -> bool:
        """False (and the user told why) when the localiser is unsure on the displayed frame
        and the user has neither drawn a circle nor clicked Segment a second time."""
        framing = self._framing
        if framing is None:
            return True
        box, kind = self.show_framing()
        t = framing.frame_index()
        if not framing.state.needs_confirmation(t, self._framing_options()[0]):
            return True
        if self._armed == (id(framing.image), t):
            framing.state.confirmed.add(t)
            self._disarm()
            return True
        from napari.utils.notifications import show_warning

        self._armed = (id(framing.image), t)
        self.run_button.text = SEGMENT_ANYWAY
        message = describe(t, box, kind, True, "T" in framing.axes)
        self.status.value = f"check the framing first: {message}"
        show_warning(message)
        return False

    def _framing_kwargs(self, frame_range: tuple[int, int]) -> dict:
        """The predictor's embryo / diameter_px / localise for the frames of a run."""
        if self._framing is None or self._framing.image is not self._pending.get("layer"):
            return {}
        kwargs = self._framing.predictor_kwargs(range(*frame_range))
        if self.steady.value and self.steady.enabled and frame_range[1] - frame_range[0] > 1:
            kwargs["steady"] = DEFAULT_WINDOW
        return kwargs

    def _show_run_framing(self, pending: dict, metas: list[dict]) -> str:
        """Show the circles a run used (on top of its layers); returns a note for the status
        line when the localiser was unsure on some frames (also a napari warning)."""
        framing = self._framings.get(id(pending["layer"]))
        if framing is None or not any(metas):
            return ""
        unsure = framing.results(pending["placement"].first_frame, metas)
        layer = framing.ensure_layer()
        self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))
        if framing is self._framing:
            self.show_framing()
        if not unsure:
            return ""
        listed = ", ".join(str(t) for t in unsure[:8]) + (", ..." if len(unsure) > 8 else "")
        note = (f"; the embryo's place was unsure on {len(unsure)} frame"
                f"{'s' if len(unsure) > 1 else ''} ({listed}): check the orange circles, fix "
                "them and segment again")
        from napari.utils.notifications import show_warning

        show_warning(note[2:])
        return note

