"""Dock widget "Probability-map preview": the overlap-aware probability map P (S4, thesis
section 4.3 and the variants of section 5.4) of the user's own labels, live.

Pick the labels (a Labels layer, or the amodal result layers of a segmentation, whose cells may
overlap across layers), optionally a nuclei Labels layer, a variant and its parameters (only the
parameters the variant uses are shown). P appears as an image layer ``"<labels> P (<variant>)"``
and follows every edit: the labels layers are watched (``events.paint`` after a brush stroke,
fill or polygon; ``events.data`` / ``events.set_data`` when the data is replaced, or on undo);
events are debounced (:data:`DEBOUNCE_MS`) and P is recomputed through
:class:`blastoseg.targets.probability_cache.ProbabilityMapCache`, which redoes only the edited cells,
so an edit on a 1024 x 1024 frame with 50 cells updates well within the 200 ms goal. A stack of
labels previews the displayed frame and follows the time slider (P is one 2D layer shown on
every frame).

"Export P with dataset..." computes P with the chosen variant and parameters for every image
of a dataset folder and stores it there for training
(:func:`blastoseg.targets.probability_export.export_probability_maps`; training reads it with
the config ``"probability": {"variant": "from_dataset"}``).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.napari import _ui
from blastoseg.napari.layer_pairing import (
    NUCLEI_ROLE,
    is_nuclei_name,
    nuclei_name_for,
    rank_for_image,
)
from blastoseg.napari.result_layers import amodal_groups
from blastoseg.targets.probability import (
    PROBABILITY_VARIANTS,
    VARIANT_DESCRIPTIONS,
    VARIANT_PARAMS,
    ProbabilityParams,
)
from blastoseg.targets.probability_cache import ProbabilityMapCache

DEBOUNCE_MS = 50
SETTINGS_FILE = "napari_probability_widget.json"
ROLE = "probability_preview"
NO_NUCLEI = "(none)"
#: spin-box ranges of the parameters (field of ProbabilityParams -> (min, max, step, label))
PARAM_SPECS = {
    "background": (0.0, 1.0, 0.05, "background (b)"),
    "floor": (0.0, 1.0, 0.05, "floor (f)"),
    "log_scale": (0.0, 1000.0, 1.0, "log scale (a)"),
    "overlap_width": (0.0, 500.0, 1.0, "overlap width (px)"),
}
PARAM_TIPS = {
    "background": "P of pixels inside no cell (the thesis uses 0.1)",
    "floor": "the lowest P inside a cell (its centre, the side far from the nucleus, or "
             "outside the overlap band)",
    "log_scale": "a in 1 - log(1 + a d) / log(1 + a) (eq. 4.4): larger concentrates the "
                 "weight closer to the outlines / nuclei / overlaps; 0 is a linear decay",
    "overlap_width": "width of the band around the overlaps where P decays from 1 to the floor",
}


def preview_name(source: str, variant: str) -> str:
    return f"{source} P ({variant})"


class ProbabilityWidget(_ui.ScrollableDock, Container):
    """Form: labels, nuclei, variant and its parameters; P as a live image layer; export."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True, scrollable=True)  # never taller than the screen
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        saved = _ui.load_settings(SETTINGS_FILE)
        self.labels = ComboBox(label="labels", choices=self._sources, nullable=True)
        self.labels.tooltip = ("a Labels layer (one label per cell), or a segmentation's amodal "
                               "result layers (cells may overlap across them)")
        self.nuclei = ComboBox(label="nuclei", choices=self._nuclei_layers)
        self.nuclei.tooltip = "optional nucleus mask or labels (for the nuclei variants)"
        variant = saved.get("variant") if saved.get("variant") in PROBABILITY_VARIANTS \
            else PROBABILITY_VARIANTS[0]
        self.variant = ComboBox(label="variant", choices=PROBABILITY_VARIANTS, value=variant)
        defaults = ProbabilityParams().to_dict()
        saved_params = saved.get("params") if isinstance(saved.get("params"), dict) else {}
        self.params: dict[str, FloatSpinBox] = {}
        for name, (lo, hi, step, label) in PARAM_SPECS.items():
            value = saved_params.get(name, defaults[name])
            value = float(value) if isinstance(value, (int, float)) and lo <= value <= hi \
                else defaults[name]
            box = FloatSpinBox(label=label, min=lo, max=hi, step=step, value=value)
            box.tooltip = PARAM_TIPS[name]
            self.params[name] = box
        self.description = Label(value="")
        self.description.native.setWordWrap(True)
        self.description.native.setMinimumWidth(200)
        self.export_button = PushButton(text="Export P with dataset...")
        self.export_button.tooltip = (
            "compute P with this variant and these parameters for every image of a dataset "
            "folder and store it there (probability/<image>_P.tif) for training")
        self.progress = ProgressBar(value=0, min=0, max=1, label="export", visible=False)
        self.status = Label(value="", label="status")
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(200)
        self.extend([self.labels, self.nuclei, self.variant, *self.params.values(),
                     self.description, self.export_button, self.progress, self.status])

        self._watched: list = []       # layers whose edits trigger an update
        self._cache: ProbabilityMapCache | None = None
        self._cache_key = None
        self._nuclei_frame: np.ndarray | None = None
        self._frame_key = None
        self._timer = None
        self._last_error = ""
        self.worker = None
        self._export_total = 0
        self.labels.changed.connect(self._on_source_changed)
        self.nuclei.changed.connect(self._on_source_changed)
        self.variant.changed.connect(self._on_variant_changed)
        for box in self.params.values():
            box.changed.connect(self._on_params_changed)
        self.export_button.changed.connect(self._export_dialog)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self._show_params()
        with self.labels.changed.blocked(), self.nuclei.changed.blocked():
            self.labels.value = self._default_source()
            self._default_nuclei()
        self._on_source_changed()

    # --- choices ------------------------------------------------------------------------------
    def _sources(self, _widget=None) -> list:
        """Result groups first (their cells may overlap), then every Labels layer (and Image
        layers, in case a label image was opened as an image)."""
        from napari.layers import Image, Labels

        out = [(f"{g} ({len(ls)} result layers)", f"group:{g}")
               for g, ls in amodal_groups(self.viewer.layers).items() if len(ls) > 1]
        out += [(la.name, f"layer:{la.name}") for la in self.viewer.layers
                if isinstance(la, Labels)]
        out += [(f"{la.name} (image)", f"image:{la.name}") for la in self.viewer.layers
                if isinstance(la, Image) and not la.rgb
                and _ui.layer_tag(la).get("role") is None]
        return out

    def _default_source(self) -> str | None:
        """The active labels, else the labels of the image the user looks at (its result
        group, labels named after it, labels of its size), else the first; never an Image
        layer or a nucleus mask (those only when chosen by hand)."""
        candidates = [(key, self._layers_of(key)) for _, key in self._sources()
                      if not key.startswith("image:")]
        candidates = [(key, layers) for key, layers in candidates
                      if not any(self._is_nuclei(la) for la in layers)]
        active = self.viewer.layers.selection.active
        for key, layers in candidates:
            if active is not None and any(la is active for la in layers):
                return key
        ranked = rank_for_image(candidates, self._shown_image())
        return ranked[0] if ranked else None

    def _shown_image(self):
        """The image the user works on: the active image, the image the active layer was
        made from, else the topmost visible image (blastoseg's own maps excluded)."""
        from napari.layers import Image

        images = [la for la in self.viewer.layers
                  if isinstance(la, Image) and _ui.layer_tag(la).get("role") is None]
        active = self.viewer.layers.selection.active
        if active is not None and any(la is active for la in images):
            return active
        source = _ui.layer_tag(active).get("source_image") if active is not None else None
        for la in images:
            if source is not None and la.name == source:
                return la
        visible = [la for la in images if la.visible]
        return (visible or images or [None])[-1]

    @staticmethod
    def _is_nuclei(layer) -> bool:
        return _ui.layer_tag(layer).get("role") == NUCLEI_ROLE or is_nuclei_name(layer.name)

    def _nuclei_layers(self, _widget=None) -> list:
        """Labels layers, and nucleus masks opened as images (``<image>_nuclei``)."""
        from napari.layers import Image, Labels

        return [(NO_NUCLEI, None)] + [
            (la.name, la.name) for la in self.viewer.layers
            if isinstance(la, Labels) or (isinstance(la, Image) and self._is_nuclei(la)
                                          and np.issubdtype(la.data.dtype, np.integer))]

    def _default_nuclei(self, only=None) -> None:
        """Choose the shown image's nucleus mask (``<image>_nuclei``) when there is one
        (``only``: when that layer is this one)."""
        image = self._shown_image()
        if image is None:
            return
        name = nuclei_name_for(image.name)
        if (only is None or only.name == name) and name in [c[1] for c in
                                                            self._nuclei_layers()]:
            self.nuclei.value = name

    def _on_layers_changed(self, event=None) -> None:
        value = getattr(event, "value", None)
        if value is not None and _ui.layer_tag(value).get("role") == ROLE:
            return  # our own preview layer
        current, nuc = self.labels.value, self.nuclei.value
        with self.labels.changed.blocked(), self.nuclei.changed.blocked():
            self.labels.reset_choices()
            self.nuclei.reset_choices()
            if self.labels.value is None or (self.labels.value != current
                                             and self.labels.value.startswith("image:")):
                self.labels.value = self._default_source()
            if self.nuclei.value is None and value is not None:
                self._default_nuclei(only=value)  # the image's nucleus mask was just opened
        if self.labels.value != current or self.nuclei.value != nuc or any(
                la not in self.viewer.layers for la in self._watched):
            self._on_source_changed()
        elif current is None and self.labels.value is not None:
            self._on_source_changed()

    def source_layers(self) -> list:
        """The layers of the chosen labels (one, or a result group's amodal layers)."""
        key = self.labels.value
        if not key:
            return []
        kind, name = key.split(":", 1)
        return self._layers_of(key)

    def _layers_of(self, key: str) -> list:
        kind, name = key.split(":", 1)
        if kind == "group":
            return list(amodal_groups(self.viewer.layers).get(name, []))
        # "layer:" a Labels layer, "image:" an Image layer holding a label image
        return [self.viewer.layers[name]] if name in self.viewer.layers else []

    def source_name(self) -> str:
        key = self.labels.value or ""
        return key.split(":", 1)[1] if ":" in key else ""

    def nuclei_layer(self):
        name = self.nuclei.value
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # --- parameters ---------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"variant": self.variant.value,
                "params": {k: float(b.value) for k, b in self.params.items()}}

    def variant_params(self) -> dict:
        """The chosen variant's parameters (only those it uses)."""
        return {k: float(self.params[k].value) for k in VARIANT_PARAMS[self.variant.value]}

    def shown_params(self) -> list[str]:
        """Names of the parameter boxes the form shows (those of the chosen variant)."""
        return [k for k, b in self.params.items() if not b.native.isHidden()]

    def _show_params(self) -> None:
        used = VARIANT_PARAMS[self.variant.value]
        for name, box in self.params.items():
            box.visible = name in used
        self.description.value = VARIANT_DESCRIPTIONS.get(self.variant.value, "")

    def _on_variant_changed(self, *_args) -> None:
        self._show_params()
        self._on_params_changed()

    def _on_params_changed(self, *_args) -> None:
        _ui.save_settings(SETTINGS_FILE, self.settings())
        self._cache = None
        self.update_now()

    # --- watching the layers ------------------------------------------------------------------
    def _disconnect(self) -> None:
        for la in self._watched:
            for name in ("paint", "data", "set_data"):
                emitter = getattr(la.events, name, None)
                if emitter is not None:
                    emitter.disconnect(self._on_edit)
        self._watched = []

    def _on_source_changed(self, *_args) -> None:
        self._disconnect()
        layers = self.source_layers()
        nuc = self.nuclei_layer()
        for la in [*layers, *([nuc] if nuc is not None else [])]:
            for name in ("paint", "data", "set_data"):
                emitter = getattr(la.events, name, None)
                if emitter is not None:
                    emitter.connect(self._on_edit)
            self._watched.append(la)
        self._cache = None
        self._last_error = ""
        self.update_now()

    def _on_edit(self, _event=None) -> None:
        self._schedule()

    def _on_step(self, _event=None) -> None:
        if self._frame_key is not None and self._frame_key != self._frame_indices():
            self._schedule()

    def _schedule(self) -> None:
        from qtpy.QtCore import QTimer

        if self._timer is None:
            self._timer = QTimer(self.native)
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.update_now)
        self._timer.start(DEBOUNCE_MS)

    # --- frames -------------------------------------------------------------------------------
    def _leading_index(self, layer) -> tuple[int, ...]:
        """Data indices of ``layer``'s non-spatial axes at the viewer's current position."""
        dims = self.viewer.dims
        out = []
        for axis in range(layer.ndim - 2):
            world = dims.point[dims.ndim - layer.ndim + axis]
            idx = int(round((world - layer.translate[axis]) / layer.scale[axis]))
            out.append(int(np.clip(idx, 0, layer.data.shape[axis] - 1)))
        return tuple(out)

    def _frame_indices(self) -> tuple:
        return tuple(self._leading_index(la) for la in self.source_layers())

    @staticmethod
    def _plane(layer, index: tuple[int, ...]) -> np.ndarray:
        data = layer.data
        return np.asarray(data[index] if index else data)

    # --- the preview --------------------------------------------------------------------------
    def _preview_layer(self):
        for la in self.viewer.layers:
            tag = _ui.layer_tag(la)
            if tag.get("role") == ROLE and tag.get("source") == self.labels.value:
                return la
        return None

    def update_now(self) -> None:
        """Recompute P of the displayed frame now (edits call this after the debounce)."""
        if self._timer is not None:
            self._timer.stop()
        layers = self.source_layers()
        if not layers:
            self.status.value = ("no labels: add or open a Labels layer (or segment an image) "
                                 "and choose it in the 'labels' box")
            return
        try:
            p, n_cells, frame = self._compute(layers)
        except BlastosegError as exc:
            self._error(exc)
            return
        self._last_error = ""
        self._show(p, layers[0])
        variant = self.variant.value
        where = f"frame {frame}: " if frame is not None else ""
        if n_cells == 0:
            note = "no cells in the labels: P is the background value everywhere; paint cells"
        elif n_cells == 1:
            note = ("1 cell: P is shown, but a single cell has no neighbours or overlaps (the "
                    "overlap variants give the floor inside it)")
        else:
            note = f"{n_cells} cells"
        self.status.value = f"{where}{note}; P ({variant}) from {p.min():.2f} to {p.max():.2f}"

    def _compute(self, layers: list) -> tuple[np.ndarray, int, int | None]:
        indices = [self._leading_index(la) for la in layers]
        planes = [self._plane(la, idx) for la, idx in zip(layers, indices, strict=True)]
        shapes = {pl.shape for pl in planes}
        if len(shapes) != 1 or planes[0].ndim != 2:
            raise InvalidImageError(
                f"the labels must be 2D frames of one size; got {sorted(shapes)}")
        labels = planes[0] if len(planes) == 1 else np.stack(planes)
        nuclei = None
        nuc = self.nuclei_layer()
        if nuc is not None:
            nuclei = self._plane(nuc, self._leading_index(nuc))
            if nuclei.shape != planes[0].shape:
                raise InvalidImageError(
                    f"the nuclei layer {nuc.name!r} has frames of {nuclei.shape}, the labels "
                    f"{planes[0].shape}; choose a nuclei layer of the same size")
        variant, params = self.variant.value, self.variant_params()
        key = (self.labels.value, variant, tuple(sorted(params.items())),
               nuc.name if nuc is not None else None)
        if self._cache is None or self._cache_key != key:
            self._cache = ProbabilityMapCache(variant, nuclei=nuclei, **params)
            self._cache_key = key
        elif nuclei is not None and (self._nuclei_frame is None
                                     or not np.array_equal(nuclei, self._nuclei_frame)):
            self._cache.set_nuclei(nuclei)
        self._nuclei_frame = None if nuclei is None else nuclei.copy()
        p = self._cache.update(labels)
        self._frame_key = tuple(indices)
        composer = getattr(self._cache, "_composer", None)
        if composer is not None and hasattr(composer, "cells"):
            n_cells = len(composer.cells)
        else:
            n_cells = int(sum(len(np.unique(pl[pl > 0])) for pl in planes))
        frame = indices[0][0] if indices[0] else None
        return p, n_cells, frame

    def _show(self, p: np.ndarray, source) -> None:
        """Put P into the preview layer (created on first use, renamed with the variant)."""
        name = preview_name(self.source_name(), self.variant.value)
        meta = {"blastoseg": {"role": ROLE, "source": self.labels.value,
                              "variant": self.variant.value, "params": self.variant_params()}}
        layer = self._preview_layer()
        scale, translate = tuple(source.scale[-2:]), tuple(source.translate[-2:])
        if layer is None:
            active = self.viewer.layers.selection.active
            # translucent, not additive: brightfield images are bright, and added to them P
            # would saturate to white
            self.viewer.add_image(p, name=name, colormap="inferno", blending="translucent",
                                  opacity=0.6, contrast_limits=(0.0, 1.0), scale=scale,
                                  translate=translate, metadata=meta)
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active  # keep painting the labels
            return
        layer.data = p
        layer.metadata = meta
        if layer.name != name:
            layer.name = name

    def _error(self, exc: Exception) -> None:
        """Show a user error; a live update repeats the notification only when it changes."""
        if str(exc) != self._last_error:
            self._last_error = str(exc)
            _ui.report_error(self.status, exc)
        else:
            self.status.value = f"error: {exc}"

    # --- export -------------------------------------------------------------------------------
    def _export_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(
            self.native, "Dataset folder to store P with (the folder holding annotations.json)")
        if folder:
            self.export_to(folder)

    def export_to(self, folder) -> None:
        """Compute and store P for every image of the dataset ``folder`` in a worker."""
        from napari.qt.threading import create_worker

        from blastoseg.targets.probability_export import iter_export_probability_maps

        if self.worker is not None:
            return

        def work():
            try:
                return (yield from iter_export_probability_maps(
                    folder, variant, params))
            except (BlastosegError, OSError) as exc:
                return exc

        variant, params = self.variant.value, self.variant_params()
        self.worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._on_export_progress)
        self.worker.returned.connect(self._on_exported)
        self.worker.errored.connect(lambda exc: setattr(self.status, "value", f"error: {exc}"))
        self.worker.aborted.connect(
            lambda: setattr(self.status, "value", "export cancelled: the dataset is unchanged"))
        self.worker.finished.connect(self._on_export_finished)
        self.export_button.enabled = False
        self.progress.visible = True
        self.progress.value = 0
        self.status.value = f"exporting P ({variant}) to {folder}..."
        self.worker.start()

    def _on_export_progress(self, update: tuple[int, int]) -> None:
        done, total = update
        self._export_total = total
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _on_exported(self, result) -> None:
        if isinstance(result, Exception):
            _ui.report_error(self.status, result)
            return
        n = self._export_total
        self.status.value = (f"P ({self.variant.value}) stored for the dataset: {n} maps in "
                             f"{result}; train with \"probability\": {{\"variant\": "
                             f"\"from_dataset\"}}")

    def _on_export_finished(self) -> None:
        self.export_button.enabled = True
        self.progress.visible = False
        self.worker = None
