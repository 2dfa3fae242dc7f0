"""Dock widget "Segment brightfield cells": a :class:`~.model_run_widget.ModelRunWidget` for
brightfield models (:class:`blastoseg.predict.brightfield.BrightfieldPredictor`), with a
measurements table and an export (CLI twins: ``blastoseg segment brightfield`` and
``blastoseg eval brightfield``).

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

from collections.abc import Callable

from magicgui.widgets import Container, FloatSpinBox, Label, PushButton, Table

from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui
from blastoseg.napari._measure_widget import _fingerprint, _plain_text, _set_table
from blastoseg.napari.brightfield_job import (
    MAP_ROLE,
    brightfield_export_exists,
    brightfield_job,
    brightfield_measurements,
    export_brightfield,
    frame_counts,
)
from blastoseg.napari.layer_conversion import label_layers_to_instances
from blastoseg.napari.model_run_widget import ModelRun, ModelRunWidget
from blastoseg.napari.result_layers import Placement, placement_of, result_layers_of

DEBOUNCE_MS = 250
COLUMNS = ("cell", "area px", "overlap px", "overlap %", "neighbours")


class BrightfieldWidget(ModelRunWidget):
    """Form (image, model, device, frames, score threshold); Run / Cancel; progress; cell
    count and measurements table; Export..."""

    kind = "brightfield"
    settings_file = "napari_brightfield_widget.json"
    progress_title = "Segmenting brightfield cells"
    image_hint = "a brightfield image or time-lapse"
    card_threshold_key = ("postprocess", "score_threshold", 0.3)
    model_tooltip = ("registered SparseSEU-Net models of kind 'brightfield' (train one with "
                     "'blastoseg train brightfield')")
    form_labels = False  # the rows are grouped in labelled containers
    _cancel_message = "cancelling (stops after the current network pass)..."

    def _add_fields(self, saved: dict) -> None:
        self.threshold = FloatSpinBox(label="score threshold", min=0.0, max=1.0, step=0.05,
                                      value=self.card_threshold_key[2])
        self.threshold.tooltip = ("cells scoring below this are dropped (score = class "
                                  "probability x maskness); set to the model's own whenever "
                                  "you choose a model")
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
        self._result: dict = {}  # group, image, amodal, maps, first, n of the last run
        self._rows: list[dict] = []
        self._hash: dict[int, str] = {}
        self._dirty_all = False
        self._timer = None

    def _form_rows(self) -> list:
        return [
            Container(labels=True, widgets=[self.image, self.model, self.device, self.mode,
                                            self.threshold]),
            self._run_row(),
            Container(labels=True, widgets=[self.progress, self.device_used]),
            self.summary, self.table, self.export_button, self.status]

    def _connect(self, saved: dict) -> None:
        self._threshold_follows_card(saved)
        self.export_button.changed.connect(self._export_dialog)
        self.viewer.dims.events.current_step.connect(self._on_step)

    def _extra_settings(self) -> dict:
        return {"threshold": float(self.threshold.value)}

    # --- running ------------------------------------------------------------------------------
    def _predictor_options(self) -> dict:
        return {"score_threshold": float(self.threshold.value)}

    def _make_run(self, layer, axes: str, frame_range: tuple[int, int],
                  get_predictor: Callable[[], object]) -> ModelRun:
        self._pending = {"group": layer.name, "image": layer, "first": frame_range[0],
                         "n": frame_range[1] - frame_range[0], "axes": axes}
        return ModelRun(brightfield_job, [layer.data, axes, frame_range, get_predictor], {
            "name": layer.name, "rgb": bool(layer.rgb), "placement": Placement(
                axes=axes, scale=tuple(layer.scale), translate=tuple(layer.translate))})

    def _replaced_by_run(self, group: str) -> list:
        return result_layers_of(list(self.viewer.layers), group) + [
            la for la in self.viewer.layers if _ui.layer_tag(la).get("group") == group
            and _ui.layer_tag(la).get("role") == MAP_ROLE]

    def _show_result(self, result: dict) -> None:
        pending = self._pending
        group = pending["group"]
        self._disconnect()
        added = self._replace_layers(self._replaced_by_run(group), result["layers"])
        amodal = self._select_first(added, "amodal")
        self._result = {**pending, "amodal": amodal,
                        "maps": [la for la in added if _ui.layer_tag(la).get("role") == MAP_ROLE]}
        for la in amodal:
            for name in ("paint", "data", "set_data"):
                getattr(la.events, name).connect(self._on_edit)
        self._rows, self._hash = list(result["rows"]), {}
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
                self._report_error(exc)
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
            self._report_error(exc)
            return
        self.status.value = (f"exported {out['frames']} frame(s), {len(out['rows'])} cells "
                             f"to {folder}: dataset, cells.csv, counts.csv")
