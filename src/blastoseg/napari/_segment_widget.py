"""Dock widget "Segment blastomeres": a form and a background worker around
``blastoseg.predict.amodal.AmodalPredictor`` (CLI twin: ``blastoseg segment amodal``).

The work runs in a napari thread worker over :func:`segment_job`, a generator that yields
``(message, done, total)`` after focal-plane selection steps, after loading the model and after
every batch of frames, so the viewer stays responsive, napari's progress bar moves and Cancel
stops between batches. The result becomes layers through :mod:`.result_layers`.

The embryo circle (Shapes layer "<image>: embryo framing", :mod:`._segment_framing`) shows
where the model will look on the displayed frame; moving or drawing it, the diameter field
and "frames are already crops" become the predictor's ``embryo=``, ``diameter_px=`` and
``localise=``. When the localiser is unsure on the displayed frame, the first click on
Segment only says so (the button then reads "Segment anyway"); a second click segments with
the guess shown.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.napari import _ui
from blastoseg.napari._job_runner import JobRunnerMixin
from blastoseg.napari._segment_framing import SEGMENT
from blastoseg.napari._segment_framing_form import FramingFormMixin
from blastoseg.napari.result_layers import (
    Placement,
    ResultLayerBuilder,
    apply_display,
    result_layers_of,
)
from blastoseg.napari.torch_import import import_predictor_safely

MODES, DEVICES = _ui.MODES, _ui.DEVICES
BEST = "best focus"
SETTINGS_FILE = "napari_segment_widget.json"
#: what a result's meta says about its framing (kept per frame for the embryo circle)
FRAMING_META = ("embryo", "embryo_unsure", "embryo_guess")


# --- the work (no Qt) -------------------------------------------------------------------------

def image_axes(shape: tuple[int, ...], rgb: bool = False, axes_hint: str | None = None) -> str:
    """Non-spatial axes of an image layer: ``""``, ``"T"``, ``"Z"`` or ``"TZ"``."""
    nd = len(shape) - (1 if rgb else 0)
    if nd == 2:
        return ""
    if nd == 3:
        return "Z" if (axes_hint or "").upper().startswith("Z") else "T"
    if nd == 4 and not rgb:
        return "TZ"
    raise InvalidImageError(
        f"cannot segment an image of shape {tuple(shape)}: expected a 2D frame, a (T, Y, X) "
        "time-lapse or a (T, Z, Y, X) stack with focal planes")


def segment_job(data, axes: str, frame_range: tuple[int, int], plane: int | str,
                get_predictor: Callable[[], object], group: str = "result",
                placement: Placement | None = None, framing: dict | None = None
                ) -> Generator[tuple[str, int, int], None, dict]:
    """Choose planes, load the model, segment; yields (message, done, total).

    Each frame's result goes straight into a :class:`ResultLayerBuilder` (compressed arrays
    for stacks) and is dropped, so a long time-lapse is never held as instance masks.
    ``framing`` holds the predictor's ``embryo``, ``diameter_px`` and ``localise`` arguments
    (``embryo`` one box for all frames or one entry per frame of ``frame_range``).
    Returns a dict with ``builder`` (call ``layer_data()`` for the layers), ``planes`` (plane
    index per frame or None), ``framing`` (each frame's framing metadata) and ``predictor``.
    """
    from blastoseg.predict.focus import best_focus_planes

    t0, t1 = frame_range
    n = t1 - t0
    planes = None
    if axes in ("", "T"):
        frames = [np.asarray(data)] if axes == "" else [np.asarray(data[t]) for t in range(t0, t1)]
    else:
        stack = data[None] if axes == "Z" else data
        frames, planes = [], []
        for i, t in enumerate(range(t0, t1)):
            z = int(best_focus_planes(np.asarray(stack[t])[None])[0]) if plane == BEST else int(plane)
            planes.append(z)
            frames.append(np.asarray(stack[t, z]))
            if plane == BEST and (i % 8 == 7 or i == n - 1):
                yield f"choosing the best focal plane ({i + 1}/{n})", 0, n
    yield "loading the model", 0, n
    predictor = get_predictor()
    yield f"segmenting on {predictor.device_name}", 0, n
    built: list[ResultLayerBuilder] = []
    metas: list[dict] = [{} for _ in range(n)]

    def keep(i: int, inst) -> None:
        if not built:
            built.append(ResultLayerBuilder(n, inst.shape, group, placement))
        built[0].add(i, inst)
        meta = inst.meta or {}
        metas[i] = {k: meta[k] for k in FRAMING_META if k in meta}

    yield from ((f"segmenting on {predictor.device_name}", done, total)
                for done, total in predictor.iter_predict(frames, on_result=keep,
                                                          **(framing or {})))
    return {"builder": built[0], "planes": planes, "predictor": predictor, "framing": metas}


def _user_errors_returned(*args) -> Generator[tuple[str, int, int], None, dict]:
    """:func:`segment_job`, returning a user error (bad input, missing model, no such device)
    as ``{"error": exc}``: napari's worker would show any raised exception with a traceback,
    which is right for bugs only."""
    try:
        return (yield from segment_job(*args))
    except BlastosegError as exc:
        return {"error": exc}


def load_settings() -> dict:
    return _ui.load_settings(SETTINGS_FILE)


def save_settings(settings: dict) -> None:
    _ui.save_settings(SETTINGS_FILE, settings)


def _amodal_model_names() -> list[str]:
    return _ui.model_names("amodal")


def calibrated_threshold(model: str) -> float:
    """The score threshold stored in a model's card (0.5 when it has none or cannot be read)."""
    return _ui.card_number(model, "amodal", "postprocess", "score_threshold", 0.5)


# --- the form ---------------------------------------------------------------------------------

class SegmentWidget(FramingFormMixin, JobRunnerMixin, Container):
    """Form: image, focal plane, model, device, threshold, frames; Segment / Cancel; progress."""

    _cancel_message = "cancelling (stops after the current batch)..."
    _pbar_follows_total = False  # napari's bar keeps the frame count it started with

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        saved = load_settings()
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.plane = ComboBox(label="focal plane", choices=[(BEST, BEST)])
        self.model = ComboBox(label="model", choices=self._models)
        self.device, self.mode = _ui.device_and_mode(saved, MODES[1])
        self.calibrated = CheckBox(text="model's calibrated threshold",
                                   value=bool(saved.get("calibrated", True)))
        self.calibrated.tooltip = (
            "use the score threshold stored with the model (chosen by 'blastoseg calibrate "
            "amodal' for the best cell counts); untick to set your own")
        self.threshold = FloatSpinBox(label="score threshold", min=0.0, max=1.0, step=0.05,
                                      value=float(saved.get("score_threshold", 0.5)))
        self._framing_form(saved)
        self.run_button = PushButton(text=SEGMENT)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.device_used = Label(value="-", label="device used")
        self.status = Label(value="", label="status")
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(200)
        self.extend([self.image, self.plane, self.model, self.device, self.calibrated,
                     self.threshold, self.mode, self._diameter_row, self.crops, self.scope,
                     self._framing_buttons, self.framing_info,
                     self.run_button, self.cancel_button, self.progress, self.device_used,
                     self.status])
        self._saved = saved
        if saved.get("model") in self.model.choices:
            self.model.value = saved["model"]
        self.worker = None
        self._pbar = None
        self._predictor = None
        self._predictor_key = None
        self._pending: dict = {}
        self._framing_state()
        self.image.changed.connect(self._on_image_changed)
        self.model.changed.connect(self._on_threshold_source_changed)
        self.calibrated.changed.connect(self._on_threshold_source_changed)
        self._on_threshold_source_changed()
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self._connect_framing()
        self._on_image_changed()
        _ui.refresh_on_show(self, self.model.reset_choices)

    # --- choices ------------------------------------------------------------------------------
    def _image_layers(self, _widget=None) -> list:
        from napari.layers import Image

        return [(la.name, la) for la in self.viewer.layers if isinstance(la, Image)
                and (la.metadata or {}).get("blastoseg", {}).get("role") is None]

    def _models(self, _widget=None) -> list[str]:
        return _amodal_model_names()

    def _on_image_changed(self, *_args) -> None:
        layer = self.image.value
        choices: list = [(BEST, BEST)]
        axes = ""
        if layer is not None:
            try:
                axes = self._axes_of(layer)
            except BlastosegError:
                axes = ""
            if "Z" in axes:
                n_z = layer.data.shape[axes.index("Z")]
                names = (layer.metadata or {}).get("blastoseg", {}).get("focal_planes")
                names = names if names and len(names) == n_z else list(range(n_z))
                choices += [(f"plane {z} (F{names[z]})" if names != list(range(n_z))
                             else f"plane {z}", z) for z in range(n_z)]
        self.plane.choices = choices
        want = self._saved.get("plane", BEST)
        self.plane.value = want if want in [c[1] for c in choices] else BEST
        self.plane.enabled = "Z" in axes
        self.mode.enabled = "T" in axes
        self.scope.enabled = "T" in axes
        self._follow_image(layer, axes)

    def _on_threshold_source_changed(self, *_args) -> None:
        """With "calibrated" ticked, show the model's own threshold and lock the box."""
        self.threshold.enabled = not self.calibrated.value
        if self.calibrated.value and self.model.value:
            self.threshold.value = calibrated_threshold(self.model.value)

    @staticmethod
    def _axes_of(layer) -> str:
        hint = (layer.metadata or {}).get("blastoseg", {}).get("axes")
        return image_axes(tuple(layer.data.shape), bool(layer.rgb), hint)

    # --- actions ------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"model": self.model.value, "device": self.device.value,
                "calibrated": bool(self.calibrated.value),
                "score_threshold": float(self.threshold.value), "mode": self.mode.value,
                "plane": self.plane.value, "diameter": float(self.diameter.value),
                "diameter_unit": self.diameter_unit.value,
                "already_crops": bool(self.crops.value), "framing_scope": self.scope.value}

    def _get_predictor(self, model: str, device: str, threshold: float | None):
        """Runs in the worker thread: load (or reuse) the predictor; threshold None takes the
        model's calibrated one."""
        from blastoseg.predict.amodal import AmodalPredictor

        key = (model, device)
        if self._predictor is None or self._predictor_key != key:
            self._predictor = AmodalPredictor(model, device=device, score_threshold=threshold)
            self._predictor_key = key
        self._predictor.score_threshold = float(
            self._predictor.calibrated_threshold if threshold is None else threshold)
        return self._predictor

    def start(self) -> None:
        if self.worker is not None:
            return
        import_predictor_safely()
        try:
            job = self._make_job()
            self._framing_options()  # a diameter in um needs a pixel size
        except BlastosegError as exc:
            self._report_error(exc)
            return
        if not self._framing_checked():
            return
        job = (*job, self._framing_kwargs(job[2]))
        self._saved = self.settings()
        save_settings(self._saved)
        n = job[2][1] - job[2][0]
        self.start_job(_user_errors_returned, *job, desc="Segmenting blastomeres", total=n)

    def _make_job(self) -> tuple:
        layer = self.image.value
        if layer is None:
            raise InvalidImageError("no image layer: open an image (e.g. File > Open Sample > "
                                    "blastoseg) and choose it in the 'image' box")
        if not self.model.value:
            raise BlastosegError(
                "no amodal model is installed: train one with 'blastoseg train amodal' or "
                "register one with 'blastoseg models'")
        axes = self._axes_of(layer)
        frame_range = _ui.frames_to_run(self.viewer, layer, axes, self.mode.value)
        plane = self.plane.value if "Z" in axes else BEST
        n_z = layer.data.shape[axes.index("Z")] if "Z" in axes else 1
        self._pending = {
            "layer": layer, "group": layer.name,
            "placement": Placement(axes=axes, n_z=n_z, first_frame=frame_range[0],
                                   scale=tuple(layer.scale), translate=tuple(layer.translate)),
            "model": self.model.value,
        }
        model, device = self.model.value, self.device.value
        thr = None if self.calibrated.value else float(self.threshold.value)
        return (layer.data, axes, frame_range, plane,
                lambda: self._get_predictor(model, device, thr), layer.name,
                self._pending["placement"])

    # --- worker callbacks (GUI thread) --------------------------------------------------------
    def _show_device(self, message: str) -> None:
        if self._predictor is not None and message.startswith("segmenting"):
            self.device_used.value = self._predictor.device_name

    def _on_done(self, result: dict) -> None:
        from napari.layers import Layer

        if "error" in result:
            self._report_error(result["error"])
            return
        pending, builder = self._pending, result["builder"]
        predictor = result["predictor"]
        self.device_used.value = predictor.device_name
        extra = {"source_image": pending["group"], "model": predictor.entry.name,
                 "device": predictor.device_name,
                 "score_threshold": float(predictor.score_threshold)}
        if result["planes"] is not None:
            extra["focal_planes_used"] = [int(z) for z in result["planes"]]
        builder.extra.update(extra)
        data = builder.layer_data()
        for old in result_layers_of(list(self.viewer.layers), pending["group"]):
            self.viewer.layers.remove(old)  # re-running replaces, it does not pile up
        added = []
        for tup in data:
            layer = Layer.create(*tup)
            self.viewer.add_layer(layer)
            apply_display(layer)
            added.append(layer)
        amodal = [la for la in added if la.metadata["blastoseg"]["role"] == "amodal"]
        if amodal:
            self.viewer.layers.selection.active = amodal[0]
        unsure = self._show_run_framing(pending, result.get("framing") or [])
        counts = builder.counts
        n_layers = f"{len(amodal)} amodal layer" + ("s" if len(amodal) != 1 else "")
        where = (f"frame {pending['placement'].first_frame}: " if "T" in pending["placement"].axes
                 and len(counts) == 1 else "")
        self.status.value = (
            f"{len(counts)} frames, {min(counts)} to {max(counts)} cells, {n_layers}"
            if len(counts) > 1 else f"{where}{counts[0]} cells in {n_layers}") + unsure

    def _report_error(self, exc: Exception) -> None:
        _ui.report_error(self.status, exc)
