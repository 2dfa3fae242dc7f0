"""Dock widget "Oocyte inclusions": a :class:`~.model_run_widget.ModelRunWidget` for oocyte
models (:class:`blastoseg.predict.oocyte.OocytePredictor`; CLI twin: ``blastoseg segment
oocyte``).

Run gives a Labels layer of the classes (zona, perivitelline space, ooplasm, inclusions,
vacuoles, SER clusters) with a legend of their colours and label ids, and the measurement
table, one row per frame: inclusion count and total area, vacuole count and diameters, SER
clusters, ooplasm diameter, zona thickness, PVS width, and the warnings (no oocyte, two
oocytes, a cut oocyte). "Export CSV" writes the table as ``blastoseg segment oocyte`` writes
``measurements.csv``. The pixel size (um) makes the lengths micrometres; 0 keeps pixels.
The class map can be corrected with napari's label tools (the legend's numbers are the
labels to paint with); "Export dataset" writes the image and the corrected class map as an
oocyte dataset folder, which ``blastoseg train oocyte`` and the Fine-tune widget take (the
paper's synthetic-then-real recipe on a clinic's own oocytes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, PushButton

from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui
from blastoseg.napari.model_run_widget import ModelRun, ModelRunWidget
from blastoseg.napari.oocyte_job import CLASSES_ROLE, OocyteRun, legend_html, oocyte_job
from blastoseg.napari.result_layers import Placement

#: the table's rows: (measurement key, heading)
TABLE_ROWS = (("inclusion_count", "inclusions"), ("inclusion_area", "inclusion area"),
              ("vacuole_count", "vacuoles"), ("vacuole_diameters", "vacuole diameters"),
              ("ser_count", "SER clusters"), ("ooplasm_diameter", "ooplasm diameter"),
              ("zona_thickness", "zona thickness"), ("pvs_width", "PVS width"),
              ("warnings", "warnings"))


class OocyteWidget(ModelRunWidget):
    """Form: image, model, device, frames, pixel size; Run / Cancel; progress; legend;
    measurement table (with the warnings, "looks like an embryo" among them:
    :mod:`blastoseg.predict.oocyte_embryo_check`); Export CSV."""

    kind = "oocyte"
    settings_file = "napari_oocyte_widget.json"
    progress_title = "Oocyte inclusions"
    image_hint = "an oocyte image (40x, inverted brightfield or Hoffman)"
    model_tooltip = ("registered SMANet models of kind 'oocyte' (train one with 'blastoseg "
                     "train oocyte')")
    _cancel_message = "cancelling (stops after the current frame)..."

    def _add_fields(self, saved: dict) -> None:
        from qtpy.QtWidgets import QHeaderView, QTableWidget

        self.pixel_size = FloatSpinBox(label="pixel size (um)", min=0.0, max=100.0, step=0.01,
                                       value=float(saved.get("pixel_size_um", 0.0)))
        self.pixel_size.tooltip = "micrometres per pixel; 0: measurements in pixels"
        self.flips = CheckBox(text="average over flips (2.5x slower)",
                              value=bool(saved.get("flips", False)))
        self.flips.tooltip = (
            "segment each frame and its three mirror images and average the class scores: "
            "on held-out synthetic oocytes mean IoU 0.70 -> 0.72 and a third fewer false "
            "inclusions (docs/models/oocyte.md)")
        self.legend = Label(value=legend_html(), label="classes")
        self.table = QTableWidget(len(TABLE_ROWS), 1)
        self.table.setVerticalHeaderLabels([h for _, h in TABLE_ROWS])
        self.table.setHorizontalHeaderLabels(["-"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setMinimumHeight(300)
        self.table_box = Container(labels=False)
        self.table_box.native.layout().addWidget(self.table)
        self.export_button = PushButton(text="Export CSV...", enabled=False)
        self.dataset_button = PushButton(text="Export dataset...", enabled=False)
        self.dataset_button.tooltip = ("the image and the (corrected) class map as an oocyte "
                                       "dataset folder, for training or fine-tuning")
        self.run_result: OocyteRun | None = None

    def _form_rows(self) -> list:
        return [self.image, self.model, self.device, self.mode, self.pixel_size, self.flips,
                self._run_row(), self.progress, self.device_used, self.status, self.legend,
                self.table_box, self.export_button, self.dataset_button]

    def _connect(self, saved: dict) -> None:
        self.export_button.changed.connect(self._ask_export)
        self.dataset_button.changed.connect(self._ask_dataset)

    def _extra_settings(self) -> dict:
        return {"pixel_size_um": float(self.pixel_size.value), "flips": bool(self.flips.value)}

    def _predictor_options(self) -> dict:
        return {"flips": True} if self.flips.value else {}

    def _make_run(self, layer, axes: str, frame_range: tuple[int, int],
                  get_predictor: Callable[[], object]) -> ModelRun:
        placement = Placement(axes=axes, scale=tuple(layer.scale),
                              translate=tuple(layer.translate))
        self._pending = {"group": layer.name, "axes": axes}
        px = float(self.pixel_size.value) or None
        return ModelRun(oocyte_job, [layer.data, axes, frame_range, get_predictor], {
            "name": layer.name, "rgb": bool(layer.rgb), "placement": placement,
            "pixel_size_um": px}, total=frame_range[1] - frame_range[0] if axes else 1)

    # --- results (GUI thread) -------------------------------------------------------------------
    def _show_result(self, result: OocyteRun) -> None:
        group = self._pending.get("group")
        old = [la for la in self.viewer.layers
               if _ui.layer_tag(la).get("role") == CLASSES_ROLE
               and _ui.layer_tag(la).get("group") == group]
        self._replace_layers(old, result.layers)
        self.run_result = result
        self.fill_table(result)
        self.export_button.enabled = self.dataset_button.enabled = True
        first = result.results[0].measurements
        n = len(result.results)
        warn = f"; {len(first.warnings)} warning(s)" if first.warnings else ""
        embryos = sum(bool(r.meta.get("looks_like_embryo")) for r in result.results)
        if embryos:  # the one warning that says the whole result means nothing
            warn += (f"; {'this looks' if n == 1 else f'{embryos} of {n} frames look'} like "
                     "an embryo, not an oocyte")
        self.status.value = (f"{first.inclusion_count} inclusions, {first.vacuole_count} "
                             f"vacuoles" + (f" in frame {result.first_frame}" if n == 1 else
                                            f" in the first of {n} frames") + warn)

    def fill_table(self, run: OocyteRun) -> None:
        """One column per frame, one row per measurement (units in the header)."""
        from qtpy.QtWidgets import QTableWidgetItem

        from blastoseg.results.oocyte import measurement_rows

        rows = measurement_rows(run.results)
        self.table.setColumnCount(len(rows))
        unit = rows[0]["unit"] if rows else "px"
        self.table.setHorizontalHeaderLabels([f"frame {r['frame']} ({unit})" for r in rows])
        for c, row in enumerate(rows):
            for r, (key, _) in enumerate(TABLE_ROWS):
                value = row.get(key)
                text = ("-" if value is None or value == "" else
                        f"{value:.2f}" if isinstance(value, float) else str(value))
                item = QTableWidgetItem(text)
                if key == "warnings" and value:
                    item.setToolTip(str(value))
                self.table.setItem(r, c, item)

    def table_text(self) -> list[list[str]]:
        """The table's cells (rows of measurements, columns of frames), for tests."""
        return [[(self.table.item(r, c).text() if self.table.item(r, c) else "")
                 for c in range(self.table.columnCount())] for r in range(len(TABLE_ROWS))]

    def export_csv(self, path: str | Path) -> Path:
        """Write the measurements as ``blastoseg segment oocyte``'s ``measurements.csv``."""
        from blastoseg.io.atomic import atomic_write_text
        from blastoseg.results.oocyte import measurements_csv

        if self.run_result is None:
            raise BlastosegError("no measurements yet: run the model first")
        out = Path(path)
        atomic_write_text(out, measurements_csv(self.run_result.results))
        self.status.value = f"measurements written to {out}"
        return out

    def _ask_export(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Export measurements",
                                              "measurements.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except (OSError, BlastosegError) as exc:
                self._report_error(exc)

    def export_dataset(self, folder: str | Path) -> Path:
        """Write the run's frames and the class Labels layer as it is now (corrections
        included) as an oocyte dataset folder; returns the annotations.json path."""
        from blastoseg.results.oocyte import write_oocyte_dataset

        group = self._pending.get("group")
        labels = [la for la in self.viewer.layers
                  if _ui.layer_tag(la).get("role") == CLASSES_ROLE
                  and _ui.layer_tag(la).get("group") == group]
        if self.run_result is None or not labels or group not in self.viewer.layers:
            raise BlastosegError("no class map to export: run the model on an image first")
        image = self.viewer.layers[group]
        maps = np.asarray(labels[0].data)
        n, t0 = len(self.run_result.results), self.run_result.first_frame
        if self._pending.get("axes") == "T":
            images = [np.asarray(image.data[t0 + t]) for t in range(n)]
            maps = [maps[t] for t in range(n)]
        else:
            images, maps = [np.asarray(image.data)], [maps]
        out = write_oocyte_dataset(images, maps, folder,
                                   pixel_size_um=float(self.pixel_size.value) or None)
        self.status.value = f"dataset written to {out.parent}"
        return out

    def _ask_dataset(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Export the oocyte dataset to")
        if folder:
            try:
                self.export_dataset(folder)
            except (OSError, ValueError, BlastosegError) as exc:
                self._report_error(exc)
