"""Dock widget "Segment brightfield cells": a form, a background worker, a measurements table and
an export around :class:`blastoseg.predict.brightfield.BrightfieldPredictor` (CLI twins:
``blastoseg segment brightfield`` and ``blastoseg eval brightfield``).

The work runs in a napari thread worker over
:func:`~blastoseg.napari.brightfield_job.brightfield_job` (Qt-free), which yields after loading
the model and after every network pass, so the viewer stays responsive, the progress bar moves
and Cancel stops between passes. The overlapping whole-cell instances become amodal Labels
layers shown as contours (the blastomere widget's representation: edit them with napari's
label tools), and the nuclei / overlap probability maps become image layers. The table follows
the user's edits (the displayed frame is re-measured after a brush stroke, fill or undo), and
"Export..." writes the corrected result in the dataset format with the measurement CSVs.
"""

from __future__ import annotations

from magicgui.widgets import (
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Table,
)

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.napari import _ui
from blastoseg.napari._job_runner import JobRunnerMixin
from blastoseg.napari._measure_widget import _fingerprint, _plain_text, _set_table
from blastoseg.napari.brightfield_job import (
    DEFAULT_THRESHOLD,
    MAP_ROLE,
    brightfield_export_exists,
    brightfield_job,
    brightfield_measurements,
    brightfield_model_names,
    card_threshold,
    export_brightfield,
    frame_counts,
)
from blastoseg.napari.export_results import _tag
from blastoseg.napari.layer_conversion import label_layers_to_instances
from blastoseg.napari.overlap_job import overlap_axes
from blastoseg.napari.result_layers import (
    Placement,
    apply_display,
    placement_of,
    result_layers_of,
)
from blastoseg.napari.torch_import import import_predictor_safely

MODES, DEVICES = _ui.MODES, _ui.DEVICES
SETTINGS_FILE = "napari_brightfield_widget.json"
DEBOUNCE_MS = 250
COLUMNS = ("cell", "area px", "overlap px", "overlap %", "neighbours")


def _user_errors_returned(*args, **kwargs):
    """:func:`brightfield_job`, returning a user error (bad input, missing model, no such
    device) as ``{"error": exc}``: napari's worker shows raised exceptions with a traceback,
    which is right for bugs only."""
    try:
        return (yield from brightfield_job(*args, **kwargs))
    except BlastosegError as exc:
        return {"error": exc}


def load_predictor(model: str, device: str):
    """The predictor the widget runs (tests replace this with a stub)."""
    from blastoseg.predict.brightfield import BrightfieldPredictor

    return BrightfieldPredictor(model, device=device)


class BrightfieldWidget(JobRunnerMixin, Container):
    """Form (image, model, device, frames, score threshold); Run / Cancel; progress; cell
    count and measurements table; Export..."""

    _cancel_message = "cancelling (stops after the current network pass)..."

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        saved = _ui.load_settings(SETTINGS_FILE)
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.model = ComboBox(label="model", choices=lambda _w=None: brightfield_model_names())
        self.model.tooltip = ("registered SparseSEU-Net models of kind 'brightfield' (train "
                              "one with 'blastoseg train brightfield')")
        self.device, self.mode = _ui.device_and_mode(saved, MODES[0])
        self.threshold = FloatSpinBox(label="score threshold", min=0.0, max=1.0, step=0.05,
                                      value=DEFAULT_THRESHOLD)
        self.threshold.tooltip = ("cells scoring below this are dropped (score = class "
                                  "probability x maskness); set to the model's own whenever "
                                  "you choose a model")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.device_used = Label(value="-", label="device used")
        self.summary = Label(value="")
        self.table = Table()
        self.table.native.setMinimumSize(380, 160)
        self.table.native.verticalHeader().setVisible(False)
        self.table.read_only = True
        _plain_text(self.table)
        self.export_button = PushButton(text="Export...", enabled=False)
        self.export_button.tooltip = ("a folder with the dataset (images + cell masks, your "
                                      "corrections included), cells.csv, counts.csv and the "
                                      "probability maps as TIFFs")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(200)
        self.extend([
            Container(labels=True, widgets=[self.image, self.model, self.device, self.mode,
                                            self.threshold]),
            Container(layout="horizontal", labels=False,
                      widgets=[self.run_button, self.cancel_button]),
            Container(labels=True, widgets=[self.progress, self.device_used]),
            self.summary, self.table, self.export_button, self.status])
        self.worker = None
        self._pbar = None
        self._predictor = None
        self._predictor_key = None
        self._pending: dict = {}
        self._result: dict = {}  # group, image, amodal, maps, first, n of the last run
        self._rows: list[dict] = []
        self._hash: dict[int, str] = {}
        self._dirty_all = False
        self._timer = None
        if saved.get("model") in self.model.choices:
            self.model.value = saved["model"]
        self._on_model_changed()
        if saved.get("model") == self.model.value and "threshold" in saved:
            self.threshold.value = float(saved["threshold"])
        self.model.changed.connect(self._on_model_changed)
        self.image.changed.connect(self._on_image_changed)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(self._export_dialog)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self._on_image_changed()
        _ui.refresh_on_show(self, self.model.reset_choices)

    # --- choices ------------------------------------------------------------------------------
    def _image_layers(self, _widget=None) -> list:
        from napari.layers import Image

        return [(la.name, la) for la in self.viewer.layers
                if isinstance(la, Image) and _tag(la).get("role") is None]

    def _on_model_changed(self, *_args) -> None:
        if self.model.value:
            self.threshold.value = card_threshold(self.model.value)

    def _on_image_changed(self, *_args) -> None:
        layer = self.image.value
        try:
            axes = "" if layer is None else overlap_axes(tuple(layer.data.shape),
                                                         bool(layer.rgb))
        except BlastosegError:
            axes = ""
        self.mode.enabled = axes == "T"

    # --- running ------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"model": self.model.value, "device": self.device.value, "mode": self.mode.value,
                "threshold": float(self.threshold.value)}

    def _get_predictor(self, model: str, device: str, threshold: float):
        """Runs in the worker thread: load the model, or reuse the one loaded last time."""
        if self._predictor is None or self._predictor_key != (model, device):
            self._predictor = None
            self._predictor = load_predictor(model, device)
            self._predictor_key = (model, device)
        self._predictor.score_threshold = float(threshold)
        return self._predictor

    def _make_job(self) -> tuple[tuple, dict]:
        layer = self.image.value
        if layer is None:
            raise InvalidImageError("no image layer: open a brightfield image or time-lapse "
                                    "and choose it in the 'image' box")
        if not self.model.value:
            raise BlastosegError(
                "no brightfield model is installed: train one with 'blastoseg train "
                "brightfield' or register one with 'blastoseg models'")
        axes = overlap_axes(tuple(layer.data.shape), bool(layer.rgb))
        frame_range = _ui.frames_to_run(self.viewer, layer, axes, self.mode.value)
        self._pending = {"group": layer.name, "image": layer, "first": frame_range[0],
                         "n": frame_range[1] - frame_range[0], "axes": axes}
        model, device, thr = self.model.value, self.device.value, float(self.threshold.value)
        args = (layer.data, axes, frame_range, lambda: self._get_predictor(model, device, thr))
        kwargs = {"name": layer.name, "rgb": bool(layer.rgb), "placement": Placement(
            axes=axes, scale=tuple(layer.scale), translate=tuple(layer.translate))}
        return args, kwargs

    def start(self) -> None:
        if self.worker is not None:
            return
        try:
            args, kwargs = self._make_job()
            import_predictor_safely()  # torch on the GUI thread, guarded (see torch_import)
            import blastoseg.predict.brightfield  # noqa: F401
        except BlastosegError as exc:
            _ui.report_error(self.status, exc)
            return
        _ui.save_settings(SETTINGS_FILE, self.settings())
        self.start_job(_user_errors_returned, *args, desc="Segmenting brightfield cells",
                       **kwargs)

    # --- worker callbacks (GUI thread) --------------------------------------------------------
    def _on_done(self, result: dict) -> None:
        from napari.layers import Layer

        if "error" in result:
            _ui.report_error(self.status, result["error"])
            return
        pending = self._pending
        group = pending["group"]
        self._disconnect()
        old = result_layers_of(list(self.viewer.layers), group) + [
            la for la in self.viewer.layers
            if _tag(la).get("group") == group and _tag(la).get("role") == MAP_ROLE]
        for la in old:  # re-running replaces the previous result, it does not pile up
            self.viewer.layers.remove(la)
        added = []
        for tup in result["layers"]:
            layer = Layer.create(*tup)
            self.viewer.add_layer(layer)
            apply_display(layer)
            added.append(layer)
        amodal = [la for la in added if _tag(la).get("role") == "amodal"]
        self._result = {**pending, "amodal": amodal,
                        "maps": [la for la in added if _tag(la).get("role") == MAP_ROLE]}
        if amodal:
            self.viewer.layers.selection.active = amodal[0]
        for la in amodal:
            for name in ("paint", "data", "set_data"):
                getattr(la.events, name).connect(self._on_edit)
        self._rows, self._hash = list(result["rows"]), {}
        self.device_used.value = result["predictor"].device_name
        self.export_button.enabled = True
        self._show()
        self.status.value = (f"done: correct the cells in the '{group}: amodal' layers with "
                             "napari's label tools; the table follows")

    # --- measurements that follow the user's edits --------------------------------------------
    def _alive(self) -> bool:
        amodal = self._result.get("amodal") or []
        return bool(amodal) and all(la in self.viewer.layers for la in amodal)

    def _disconnect(self) -> None:
        for la in self._result.get("amodal") or []:
            for name in ("paint", "data", "set_data"):
                getattr(la.events, name).disconnect(self._on_edit)

    def _local_index(self) -> int:
        """The displayed frame as an index into the result's frames."""
        if not self._alive() or "T" not in placement_of(self._result["amodal"][0]).axes:
            return 0
        return _ui.layer_index(self.viewer, self._result["amodal"][0])

    def _on_edit(self, event=None) -> None:
        from qtpy.QtCore import QTimer

        self._dirty_all |= getattr(event, "type", None) == "data"
        if self._timer is None:
            self._timer = QTimer(self.native)
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.remeasure)
        self._timer.start(DEBOUNCE_MS)

    def remeasure(self) -> None:
        """Re-measure the displayed frame (every frame after the data was replaced) from the
        amodal layers, when its labels changed."""
        if not self._alive():
            return
        layers = self._result["amodal"]
        placement = placement_of(layers[0])
        frames = range(self._result["n"]) if self._dirty_all else [self._local_index()]
        self._dirty_all = False
        changed = False
        for local in frames:
            planes = [placement.plane(la.data, local) for la in layers]
            key = _fingerprint(planes)
            if self._hash.get(local) == key:
                continue
            self._hash[local] = key
            try:
                inst = label_layers_to_instances(planes, labels_are_track_ids=True)[0]
            except BlastosegError as exc:
                _ui.report_error(self.status, exc)
                return
            t = self._result["first"] + local
            self._rows = [r for r in self._rows if r["frame"] != t] + \
                brightfield_measurements([inst], first_frame=t)
            changed = True
        if changed:
            self._rows.sort(key=lambda r: (r["frame"], r["cell"]))
            self._show()

    def _on_step(self, event=None) -> None:
        if self._result.get("n", 0) > 1:
            self._show()

    def _show(self) -> None:
        res = self._result
        first, n = res.get("first", 0), res.get("n", 0)
        counts = frame_counts(self._rows, range(first, first + n))
        t = first + self._local_index()
        rows = [r for r in self._rows if r["frame"] == t]
        overlapping = sum(r["neighbours"] > 0 for r in rows)
        where = f"frame {t}: " if "T" in res.get("axes", "") else ""
        text = f"{where}{len(rows)} cells, {overlapping} overlapping a neighbour"
        if n > 1:
            text += f" ({n} frames: {min(counts.values())} to {max(counts.values())} cells)"
        self.summary.value = text if n else ""
        _set_table(self.table, list(COLUMNS), [
            [r["cell"], r["area_px"], r["overlap_px"], f"{r['overlap_pct']:.1f}",
             r["neighbours"]] for r in rows])

    @property
    def rows(self) -> list[dict]:
        """All measurement rows of the last result (edits included once re-measured)."""
        return list(self._rows)

    # --- export -------------------------------------------------------------------------------
    def export(self, folder, overwrite: bool = False) -> dict:
        """:func:`~blastoseg.napari.brightfield_job.export_brightfield` of the last result."""
        if not self._alive():
            raise BlastosegError("nothing to export: run the segmentation first (its cell "
                                 "layers were removed)")
        image = self._result["image"]
        maps = [la for la in self._result["maps"] if la in self.viewer.layers]
        pixel = (image.metadata or {}).get("pixel_size_um")
        return export_brightfield(folder, image if image in self.viewer.layers else None,
                                  self._result["amodal"], maps, pixel, overwrite=overwrite)

    def _export_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        folder = QFileDialog.getExistingDirectory(
            self.native, "Export the cells to a folder (create a new one for each export)")
        if not folder:
            return
        existing = brightfield_export_exists(folder)
        if existing:
            answer = QMessageBox.question(
                self.native, "Replace the export?",
                f"{folder} already holds an export ({existing[0].name}). Replace it? The "
                "previous annotations and images are kept as .bak files, the CSV files are "
                "replaced.")
            if answer != QMessageBox.StandardButton.Yes:
                return
        try:
            out = self.export(folder, overwrite=bool(existing))
        except (BlastosegError, OSError) as exc:
            _ui.report_error(self.status, exc)
            return
        self.status.value = (f"exported {out['frames']} frame(s), {len(out['rows'])} cells "
                             f"to {folder}: dataset, cells.csv, counts.csv")
