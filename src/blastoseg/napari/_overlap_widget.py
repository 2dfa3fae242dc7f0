"""Dock widget "Overlap map": a :class:`~.model_run_widget.ModelRunWidget` for overlap models
(:class:`blastoseg.predict.overlap.OverlapPredictor`; CLI twin: ``blastoseg segment overlap``).

The work runs in a napari thread worker over :func:`~blastoseg.napari.overlap_job.overlap_job`
(Qt-free), which yields after loading the model and after every batch of sliding windows, so
the viewer stays responsive on huge images and stacks, the progress bar moves and Cancel stops
between batches. The result becomes one image layer per head (``"<image> <head>
probability"``) and a Labels layer ``"<image> overlap"`` (the overlap map thresholded);
re-running updates those layers in place (keeping their display settings), and changing the
threshold afterwards re-thresholds the Labels layer without running the model again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from magicgui.widgets import FloatSpinBox

from blastoseg.napari import _ui
from blastoseg.napari.model_run_widget import ModelRun, ModelRunWidget
from blastoseg.napari.overlap_job import (
    LABELS_ROLE,
    PROBABILITY_ROLE,
    overlap_job,
    overlap_labels_data,
)
from blastoseg.napari.result_layers import Placement

#: the thesis's overlap threshold: the form's value until a model's card says otherwise
DEFAULT_THRESHOLD = 0.3


class OverlapWidget(ModelRunWidget):
    """Form: image, model, device, frames, overlap threshold; Run / Cancel; progress."""

    kind = "overlap"
    settings_file = "napari_overlap_widget.json"
    progress_title = "Overlap map"
    image_hint = "a brightfield or embryo image"
    card_threshold_key = ("threshold", "overlap", DEFAULT_THRESHOLD)
    model_tooltip = ("registered SE-U-Net models of kind 'overlap' (train one with "
                     "'blastoseg train overlap')")
    _cancel_message = "cancelling (stops after the current batch of windows)..."

    def _add_fields(self, saved: dict) -> None:
        self.threshold = FloatSpinBox(label="overlap threshold", min=0.0, max=1.0, step=0.05,
                                      value=DEFAULT_THRESHOLD)
        self.threshold.tooltip = ("overlap probability at or above which a pixel counts as "
                                  "overlap (default: the model's, 0.3 as in the thesis); "
                                  "changing it re-thresholds the last result")

    def _form_rows(self) -> list:
        return [self.image, self.model, self.device, self.mode, self.threshold,
                self._run_row(), self.progress, self.device_used, self.status]

    def _connect(self, saved: dict) -> None:
        self._threshold_follows_card(saved)  # a new model's: no re-threshold of the old result
        self.threshold.changed.connect(self._rethreshold)

    def _extra_settings(self) -> dict:
        return {"threshold": float(self.threshold.value)}

    # --- running ------------------------------------------------------------------------------
    def _make_run(self, layer, axes: str, frame_range: tuple[int, int],
                  get_predictor: Callable[[], object]) -> ModelRun:
        placement = Placement(axes=axes, first_frame=frame_range[0], scale=tuple(layer.scale),
                              translate=tuple(layer.translate))
        self._pending = {"group": layer.name, "axes": axes, "frame_range": frame_range,
                         "n_frames": layer.data.shape[0] if axes == "T" else 1}
        return ModelRun(overlap_job, [layer.data, axes, frame_range, get_predictor], {
            "name": layer.name, "threshold": float(self.threshold.value),
            "rgb": bool(layer.rgb), "placement": placement})

    # --- worker callbacks (GUI thread) --------------------------------------------------------
    def _ours(self, group: str) -> dict[tuple[str, str], object]:
        """This widget's layers of one image: (role, head) -> layer."""
        tagged = [(_ui.layer_tag(la), la) for la in self.viewer.layers]
        return {(tag["role"], tag.get("head", "")): la for tag, la in tagged
                if tag.get("group") == group
                and tag.get("role") in (PROBABILITY_ROLE, LABELS_ROLE)}

    def _show_result(self, result: list[tuple]) -> None:
        from napari.layers import Layer

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

    def _update_in_place(self, layer, data, kwargs, kind, t0: int, t1: int) -> bool:
        """Put a new result into an existing layer (keeping the user's display settings).

        A current-frame result goes into the matching frame of an earlier whole-stack layer;
        otherwise the layer's data, scale and translate are replaced. False when the layer
        cannot take it (another type or dimensionality)."""
        if layer._type_string != kind or np.ndim(layer.data) != np.ndim(data):
            return False
        meta = kwargs["metadata"]["blastoseg"]
        old_meta = _ui.layer_tag(layer)
        old_pl = old_meta.get("placement", {})
        n = self._pending["n_frames"]
        if (self._pending["axes"] == "T" and t1 - t0 == 1 and np.shape(layer.data)[0] == n > 1
                and old_pl.get("first_frame", 0) == 0 and layer.data.shape[1:] == data.shape[1:]
                and old_meta.get("model") == meta.get("model")):
            layer.data[t0] = data[0]  # one frame of an earlier whole-stack result
            layer.refresh()
            _ui.retag(layer, threshold=meta["threshold"])
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
            _ui.retag(la, threshold=thr)
        share = 100 * float(np.mean(np.asarray(labels.data) > 0))
        self.status.value = f"re-thresholded at {thr:.2f}: {share:.1f}% of the pixels are overlap"
