"""Dock widget "Overlap map": a form and a background worker around
:class:`blastoseg.predict.overlap.OverlapPredictor` (CLI twin: ``blastoseg segment overlap``).

The work runs in a napari thread worker over :func:`~blastoseg.napari.overlap_job.overlap_job`
(Qt-free), which yields after loading the model and after every batch of sliding windows, so
the viewer stays responsive on huge images and stacks, the progress bar moves and Cancel stops
between batches. The result becomes one image layer per head (``"<image> <head>
probability"``) and a Labels layer ``"<image> overlap"`` (the overlap map thresholded);
re-running updates those layers in place (keeping their display settings), and changing the
threshold afterwards re-thresholds the Labels layer without running the model again.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import (
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
from blastoseg.napari.overlap_job import (
    LABELS_ROLE,
    PROBABILITY_ROLE,
    overlap_axes,
    overlap_job,
    overlap_labels_data,
)
from blastoseg.napari.result_layers import Placement
from blastoseg.napari.torch_import import import_predictor_safely

MODES, DEVICES = _ui.MODES, _ui.DEVICES
DEFAULT_MODEL = "overlap-default"
DEFAULT_THRESHOLD = 0.3
SETTINGS_FILE = "napari_overlap_widget.json"


def _user_errors_returned(*args, **kwargs):
    """:func:`overlap_job`, returning a user error (bad input, missing model, no such device)
    as ``{"error": exc}``: napari's worker would show a raised exception with a traceback,
    which is right for bugs only."""
    try:
        return (yield from overlap_job(*args, **kwargs))
    except BlastosegError as exc:
        return {"error": exc}


def overlap_model_names() -> list[str]:
    """Registered models of kind "overlap" (the shipped overlap-default first)."""
    return _ui.model_names("overlap", first=DEFAULT_MODEL)


def card_threshold(model: str) -> float:
    """The overlap threshold in a model's card (0.3, the thesis's, when none or unreadable)."""
    return _ui.card_number(model, "overlap", "threshold", "overlap", DEFAULT_THRESHOLD)


def _tag(layer) -> dict:
    meta = getattr(layer, "metadata", None) or {}
    tag = meta.get("blastoseg") if isinstance(meta, dict) else None
    return tag if isinstance(tag, dict) else {}


class OverlapWidget(JobRunnerMixin, Container):
    """Form: image, model, device, frames, overlap threshold; Run / Cancel; progress."""

    _cancel_message = "cancelling (stops after the current batch of windows)..."

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        saved = _ui.load_settings(SETTINGS_FILE)
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.model = ComboBox(label="model", choices=self._models)
        self.model.tooltip = ("registered SE-U-Net models of kind 'overlap' (train one with "
                              "'blastoseg train overlap')")
        self.device, self.mode = _ui.device_and_mode(saved, MODES[0])
        self.threshold = FloatSpinBox(label="overlap threshold", min=0.0, max=1.0, step=0.05,
                                      value=DEFAULT_THRESHOLD)
        self.threshold.tooltip = ("overlap probability at or above which a pixel counts as "
                                  "overlap (default: the model's, 0.3 as in the thesis); "
                                  "changing it re-thresholds the last result")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.device_used = Label(value="-", label="device used")
        self.status = Label(value="", label="status")
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(200)
        self.extend([self.image, self.model, self.device, self.mode, self.threshold,
                     Container(layout="horizontal", labels=False,
                               widgets=[self.run_button, self.cancel_button]),
                     self.progress, self.device_used, self.status])
        self.worker = None
        self._pbar = None
        self._predictor = None
        self._predictor_key = None
        self._pending: dict = {}
        if saved.get("model") in self.model.choices:
            self.model.value = saved["model"]
        self._on_model_changed()
        if saved.get("model") == self.model.value and "threshold" in saved:
            self.threshold.value = float(saved["threshold"])
        self.model.changed.connect(self._on_model_changed)
        self.image.changed.connect(self._on_image_changed)
        self.threshold.changed.connect(self._rethreshold)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self._on_image_changed()
        _ui.refresh_on_show(self, self.model.reset_choices)

    # --- choices ------------------------------------------------------------------------------
    def _image_layers(self, _widget=None) -> list:
        from napari.layers import Image

        return [(la.name, la) for la in self.viewer.layers
                if isinstance(la, Image) and _tag(la).get("role") is None]

    def _models(self, _widget=None) -> list[str]:
        return overlap_model_names()

    def _on_model_changed(self, *_args) -> None:
        if self.model.value:  # a new model's own threshold; no re-threshold of the old result
            with self.threshold.changed.blocked():
                self.threshold.value = card_threshold(self.model.value)

    def _on_image_changed(self, *_args) -> None:
        layer = self.image.value
        axes = ""
        if layer is not None:
            try:
                axes = overlap_axes(tuple(layer.data.shape), bool(layer.rgb))
            except BlastosegError:
                axes = ""
        self.mode.enabled = axes == "T"

    # --- actions ------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"model": self.model.value, "device": self.device.value, "mode": self.mode.value,
                "threshold": float(self.threshold.value)}

    def _get_predictor(self, model: str, device: str):
        """Runs in the worker thread: load the model, or reuse the one loaded last time."""
        from blastoseg.predict.overlap import OverlapPredictor

        key = (model, device)
        if self._predictor is None or self._predictor_key != key:
            self._predictor = None
            self._predictor = OverlapPredictor(model, device=device)
            self._predictor_key = key
        return self._predictor

    def _make_job(self) -> tuple[tuple, dict]:
        layer = self.image.value
        if layer is None:
            raise InvalidImageError("no image layer: open a brightfield or embryo image and "
                                    "choose it in the 'image' box")
        if not self.model.value:
            raise BlastosegError(
                "no overlap model is installed: train one with 'blastoseg train overlap' or "
                "register one with 'blastoseg models'")
        axes = overlap_axes(tuple(layer.data.shape), bool(layer.rgb))
        frame_range = _ui.frames_to_run(self.viewer, layer, axes, self.mode.value)
        placement = Placement(axes=axes, first_frame=frame_range[0], scale=tuple(layer.scale),
                              translate=tuple(layer.translate))
        self._pending = {"group": layer.name, "axes": axes, "frame_range": frame_range,
                         "n_frames": layer.data.shape[0] if axes == "T" else 1}
        model, device = self.model.value, self.device.value
        args = (layer.data, axes, frame_range, lambda: self._get_predictor(model, device))
        kwargs = {"name": layer.name, "threshold": float(self.threshold.value),
                  "rgb": bool(layer.rgb), "placement": placement}
        return args, kwargs

    def start(self) -> None:
        if self.worker is not None:
            return
        try:
            args, kwargs = self._make_job()
            import_predictor_safely()  # torch on the GUI thread, guarded (see torch_import)
            import blastoseg.predict.overlap  # noqa: F401
        except BlastosegError as exc:
            self._report_error(exc)
            return
        _ui.save_settings(SETTINGS_FILE, self.settings())
        self.start_job(_user_errors_returned, *args, desc="Overlap map", **kwargs)

    # --- worker callbacks (GUI thread) --------------------------------------------------------
    def _ours(self, group: str) -> dict[tuple[str, str], object]:
        """This widget's layers of one image: (role, head) -> layer."""
        return {(_tag(la)["role"], _tag(la).get("head", "")): la for la in self.viewer.layers
                if _tag(la).get("group") == group
                and _tag(la).get("role") in (PROBABILITY_ROLE, LABELS_ROLE)}

    def _on_done(self, result) -> None:
        from napari.layers import Layer

        if isinstance(result, dict) and "error" in result:
            self._report_error(result["error"])
            return
        pending = self._pending
        existing = self._ours(pending["group"])
        t0, t1 = pending["frame_range"]
        for data, kwargs, kind in result:
            tag = kwargs["metadata"]["blastoseg"]
            old = existing.pop((tag["role"], tag.get("head", "")), None)
            if old is not None and self._update_in_place(old, data, kwargs, kind, t0, t1):
                continue
            if old is not None:
                self.viewer.layers.remove(old)
            self.viewer.add_layer(Layer.create(data, kwargs, kind))
        for stale in existing.values():  # heads the new model lacks
            self.viewer.layers.remove(stale)
        frames = (f"frame {t0}" if t1 - t0 == 1 else f"{t1 - t0} frames"
                  ) if pending["axes"] == "T" else "the image"
        labels = [d for d, _, k in result if k == "labels"]
        share = (f"; {100 * float(np.mean(labels[0] > 0)):.1f}% of the pixels are overlap"
                 if labels else "")
        self.status.value = f"overlap maps of {frames}{share}"
        if self._predictor is not None:
            self.device_used.value = self._predictor.device_name

    def _update_in_place(self, layer, data, kwargs, kind, t0: int, t1: int) -> bool:
        """Put a new result into an existing layer (keeping the user's display settings).

        A current-frame result goes into the matching frame of an earlier whole-stack layer;
        otherwise the layer's data, scale and translate are replaced. False when the layer
        cannot take it (another type or dimensionality)."""
        if layer._type_string != kind or np.ndim(layer.data) != np.ndim(data):
            return False
        meta = kwargs["metadata"]["blastoseg"]
        old_meta = _tag(layer)
        old_pl = old_meta.get("placement", {})
        n = self._pending["n_frames"]
        if (self._pending["axes"] == "T" and t1 - t0 == 1 and np.shape(layer.data)[0] == n > 1
                and old_pl.get("first_frame", 0) == 0 and layer.data.shape[1:] == data.shape[1:]
                and old_meta.get("model") == meta.get("model")):
            layer.data[t0] = data[0]  # one frame of an earlier whole-stack result
            layer.refresh()
            layer.metadata = {**layer.metadata, "blastoseg": {**old_meta, "threshold":
                                                              meta["threshold"]}}
            return True
        layer.data = data
        layer.scale = kwargs["scale"]
        layer.translate = kwargs["translate"]
        layer.metadata = kwargs["metadata"]
        if kind == "image":
            layer.contrast_limits = kwargs["contrast_limits"]
        return True

    def _rethreshold(self, *_args) -> None:
        """Threshold changed: re-threshold the chosen image's overlap Labels layer from its
        overlap probability layer (no model run)."""
        layer = self.image.value
        if layer is None or self.worker is not None:
            return
        ours = self._ours(layer.name)
        prob, labels = ours.get((PROBABILITY_ROLE, "overlap")), ours.get((LABELS_ROLE, "overlap"))
        if prob is None or labels is None or np.shape(prob.data) != np.shape(labels.data):
            return
        thr = float(self.threshold.value)
        labels.data = overlap_labels_data(prob.data, thr)
        for la in (prob, labels):
            la.metadata = {**la.metadata, "blastoseg": {**_tag(la), "threshold": thr}}
        share = 100 * float(np.mean(np.asarray(labels.data) > 0))
        self.status.value = f"re-thresholded at {thr:.2f}: {share:.1f}% of the pixels are overlap"

    def _report_error(self, exc: Exception) -> None:
        _ui.report_error(self.status, exc)
