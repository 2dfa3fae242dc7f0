"""Dock widget "Measure blastomeres": per-frame and per-blastomere measurements of the amodal
label layers of one result, a cell-count-over-time plot, and CSV export (CLI twin: the
``counts.csv`` / ``cells.csv`` written by ``blastoseg segment amodal``; library:
:func:`blastoseg.measure.measure_frame`).

The table follows the user's corrections: every amodal layer of the chosen result is watched
(``events.paint`` after a brush stroke, fill or polygon; ``events.data`` when the data is
replaced; ``events.set_data`` after every refresh, which also covers undo/redo). Events are
debounced, and only the displayed frame is re-measured when its label planes changed (a
content hash is kept per frame), so editing a 500-frame stack stays cheap.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, Table

from blastoseg.errors import BlastosegError
from blastoseg.measure import (
    EmbryoMeasurements,
    InstanceMeasurements,
    measure_frame,
    write_measurements_csv,
)
from blastoseg.napari import _ui
from blastoseg.napari._count_plot import CountPlot
from blastoseg.napari.layer_conversion import label_layers_to_instances
from blastoseg.napari.result_layers import (
    amodal_groups,
    centroid_points,
    iter_instances_from_layers,
    placement_of,
)

DEBOUNCE_MS = 250


def with_pixel_size(rows: list, pixel_size_um: float | None) -> list:
    """Measurement rows (computed in pixels) with their micrometre columns filled in."""
    if not pixel_size_um:
        return rows
    s = float(pixel_size_um)
    out = []
    for r in rows:
        if isinstance(r, InstanceMeasurements):
            out.append(replace(r, area_um2=r.area_px * s * s, diameter_um=r.diameter_px * s))
        else:
            out.append(replace(r, mean_diameter_um=r.mean_diameter_px * s))
    return out


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}"
    return str(v)


def _plain_text(table: Table) -> None:
    """Show cells as the text we put in (magicgui's delegate re-formats numbers: 3.3000)."""
    from qtpy.QtWidgets import QStyledItemDelegate

    table.native.setItemDelegate(QStyledItemDelegate(table.native))


def _set_table(table: Table, columns: list[str], rows: list[list]) -> None:
    """Fill the table with formatted text (magicgui's Table would re-parse numbers)."""
    from qtpy.QtWidgets import QTableWidgetItem

    native = table.native
    native.clear()
    native.setColumnCount(len(columns))
    native.setRowCount(len(rows))
    native.setHorizontalHeaderLabels(columns)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            native.setItem(i, j, QTableWidgetItem(_cell(v)))
    native.resizeColumnsToContents()


def _fingerprint(planes: list[np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in planes:
        h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()


class MeasureWidget(_ui.ScrollableDock, Container):
    """Result chooser, pixel size, per-frame table, count plot, per-cell table, Export CSV."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=False, scrollable=True)  # never taller than the screen
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        self.group = ComboBox(label="result", choices=self._groups, nullable=True)
        self.pixel_size = FloatSpinBox(label="pixel size (um, 0 = unknown)", min=0.0, max=100.0,
                                       step=0.01, value=0.0)
        form = Container(labels=True, widgets=[self.group, self.pixel_size])
        self.summary = Label(value="")
        self.frames_table = Table()
        self.cells_label = Label(value="blastomeres")
        self.cells_table = Table()
        self.export_button = PushButton(text="Export CSV...")
        self.export_all_button = PushButton(text="Export results...")
        self.export_all_button.tooltip = (
            "a folder with the dataset (images + amodal masks, your corrections included), "
            "label TIFFs and the measurement CSVs")
        self.status = Label(value="")
        self.plot_box = Container(labels=False)
        self.plot = CountPlot(self.plot_box)
        self.extend([form, self.summary, self.frames_table, self.plot_box, self.cells_label,
                     self.cells_table, Container(layout="horizontal", labels=False, widgets=[
                         self.export_button, self.export_all_button]), self.status])
        for t in (self.frames_table, self.cells_table):
            t.native.setMinimumHeight(120)
            t.native.verticalHeader().setVisible(False)
            _plain_text(t)
            t.read_only = True

        self._layers: list = []   # the watched amodal layers
        self._first_frame = 0
        self._tracked = False
        self._embryo: dict[int, EmbryoMeasurements] = {}   # frame -> row (pixels)
        self._cells: dict[int, list[InstanceMeasurements]] = {}
        self._hash: dict[int, str] = {}
        self._dirty_all = False
        self._dirty_current = False
        self._timer = None
        self._layers_timer = None
        self.group.changed.connect(self._on_group_changed)
        self.pixel_size.changed.connect(self._on_pixel_size_changed)
        self.export_button.changed.connect(self._export_dialog)
        self.export_all_button.changed.connect(self._export_results_dialog)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_group_changed()

    def _draw_plot(self) -> None:
        self.plot.draw({t: e.cell_count for t, e in self._embryo.items()}, self._current_frame())

    # --- choices and wiring -------------------------------------------------------------------
    def _groups(self, _widget=None) -> list[str]:
        return list(amodal_groups(self.viewer.layers))

    def _on_layers_changed(self, event=None) -> None:
        # a re-run replaces a result's layers one by one: look once they have all arrived
        # (measuring after the first new amodal layer showed 1 cell of 3, issue 18 item 1)
        from qtpy.QtCore import QTimer

        if self._layers_timer is None:
            self._layers_timer = QTimer(self.native)
            self._layers_timer.setSingleShot(True)
            self._layers_timer.timeout.connect(self.sync_layers)
        self._layers_timer.start(DEBOUNCE_MS)

    def sync_layers(self) -> None:
        """Follow the viewer's layers: re-read the group when its amodal layers changed."""
        current = self.group.value
        self.group.reset_choices()
        now = list(amodal_groups(self.viewer.layers).get(current, []))
        if current not in self.group.choices or not self._layers or now != self._layers:
            self._on_group_changed()
        elif self.group.value != current:
            self.group.value = current

    def _disconnect(self) -> None:
        for la in self._layers:
            for name in ("paint", "data", "set_data"):
                getattr(la.events, name).disconnect(self._on_edit)
        self._layers = []

    def _on_group_changed(self, *_args) -> None:
        self._disconnect()
        groups = amodal_groups(self.viewer.layers)
        if self.group.value is None and groups:
            self.group.value = next(reversed(groups))  # the newest result
            return  # the changed signal calls us again
        self._layers = list(groups.get(self.group.value, []))
        for la in self._layers:
            for name in ("paint", "data", "set_data"):
                getattr(la.events, name).connect(self._on_edit)
        size = self._stored_pixel_size()
        with self.pixel_size.changed.blocked():
            self.pixel_size.value = size or 0.0
        self.recompute_all()

    # --- pixel size: asked once, stored in the image layer's metadata ------------------------
    def _image_layer(self):
        if not self._layers:
            return None
        tag = (self._layers[0].metadata or {}).get("blastoseg", {})
        name = tag.get("source_image") or tag.get("group")
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        from napari.layers import Image

        images = [la for la in self.viewer.layers if isinstance(la, Image)
                  and not (la.metadata or {}).get("blastoseg", {}).get("role")]
        return images[0] if len(images) == 1 else None

    def _stored_pixel_size(self) -> float | None:
        for la in [self._image_layer(), *self._layers]:
            if la is not None and (la.metadata or {}).get("pixel_size_um"):
                return float(la.metadata["pixel_size_um"])
        return None

    def _on_pixel_size_changed(self, value: float) -> None:
        value = float(value) or None
        image = self._image_layer()
        for la in [image] if image is not None else self._layers:
            if value is None:
                la.metadata.pop("pixel_size_um", None)
            else:
                la.metadata["pixel_size_um"] = value
        self._show()

    @property
    def pixel_size_um(self) -> float | None:
        return float(self.pixel_size.value) or None

    # --- measuring ----------------------------------------------------------------------------
    def _local_index(self) -> int:
        """The displayed frame, as an index into the amodal layers' result frames."""
        if not self._layers:
            return 0
        la = self._layers[0]
        placement = placement_of(la)
        if "T" not in placement.axes:
            return 0
        dims = self.viewer.dims
        world = dims.point[dims.ndim - la.ndim]
        idx = int(round((world - la.translate[0]) / la.scale[0]))
        return int(np.clip(idx, 0, la.data.shape[0] - 1))

    def _current_frame(self) -> int:
        return self._first_frame + self._local_index()

    def _planes(self, local: int) -> list[np.ndarray]:
        placement = placement_of(self._layers[0])
        return [placement.plane(la.data, local) for la in self._layers]

    def _fix_rows(self, rows: list[InstanceMeasurements]) -> list[InstanceMeasurements]:
        # instance = the label value napari shows; track ids only for tracked results
        return [replace(r, instance=int(r.track_id) + 1,
                        track_id=r.track_id if self._tracked else None) for r in rows]

    def _measure(self, frame: int, inst) -> None:
        embryo, cells = measure_frame(inst, frame=frame)
        self._embryo[frame] = embryo
        self._cells[frame] = self._fix_rows(cells)

    def recompute_all(self) -> None:
        """Re-read and re-measure every frame of the chosen result."""
        self._embryo, self._cells, self._hash = {}, {}, {}
        self._dirty_all = self._dirty_current = False
        if self._layers:
            try:
                # one frame at a time: a long (compressed) stack is never materialised
                self._first_frame, frames, self._tracked = iter_instances_from_layers(
                    self._layers)
            except BlastosegError as exc:
                self._error(exc)
                frames = []
            try:
                for i, inst in enumerate(frames):
                    self._measure(self._first_frame + i, inst)
                    self._hash[i] = _fingerprint(self._planes(i))
            except BlastosegError as exc:
                self._error(exc)
        self._show()

    def recompute_current(self) -> bool:
        """Re-measure the displayed frame if its labels changed; returns whether they did."""
        if not self._layers:
            return False
        local = self._local_index()
        planes = self._planes(local)
        key = _fingerprint(planes)
        if self._hash.get(local) == key:
            return False
        try:
            inst = label_layers_to_instances(planes, labels_are_track_ids=True)[0]
        except BlastosegError as exc:
            self._error(exc)
            return False
        self._hash[local] = key
        self._measure(self._first_frame + local, inst)
        self._update_points()
        self._show()
        return True

    def _update_points(self) -> None:
        """Move the result's centroid points to the measured (corrected) centroids."""
        from napari.layers import Points

        group = self.group.value
        points = [la for la in self.viewer.layers if isinstance(la, Points)
                  and (la.metadata or {}).get("blastoseg", {}).get("group") == group
                  and la.metadata["blastoseg"].get("role") == "centroids"]
        if not points:
            return
        rows = [r for f in sorted(self._cells) for r in self._cells[f]]
        placement = placement_of(points[0])
        data, kwargs, _ = centroid_points(
            np.array([r.frame - self._first_frame for r in rows]),
            np.array([[r.centroid_y, r.centroid_x] for r in rows]),
            np.array([r.instance for r in rows]), group, placement)
        layer = points[0]
        layer.data = data
        layer.features = kwargs["features"]
        layer.text.refresh(layer.features)

    # --- events -------------------------------------------------------------------------------
    def _on_edit(self, event=None) -> None:
        if getattr(event, "type", None) == "data":
            self._dirty_all = True
        else:
            self._dirty_current = True
        self._schedule()

    def _schedule(self) -> None:
        from qtpy.QtCore import QTimer

        if self._timer is None:
            self._timer = QTimer(self.native)
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.flush)
        self._timer.start(DEBOUNCE_MS)

    def flush(self) -> None:
        """Apply pending edits now (the debounce timer calls this)."""
        if self._dirty_all:
            self.recompute_all()
            self._update_points()
        elif self._dirty_current:
            self._dirty_current = False
            self.recompute_current()

    def _on_step(self, event=None) -> None:
        if self._embryo:
            self._show_cells()
            self._draw_plot()
            self._select_current_row()

    def _select_current_row(self) -> None:
        frames = sorted(self._embryo)
        frame = self._current_frame()
        if len(frames) > 1 and frame in self._embryo:
            self.frames_table.native.selectRow(frames.index(frame))

    # --- display ------------------------------------------------------------------------------
    def frame_rows(self) -> list[EmbryoMeasurements]:
        return with_pixel_size([self._embryo[t] for t in sorted(self._embryo)], self.pixel_size_um)

    def cell_rows(self, frame: int | None = None) -> list[InstanceMeasurements]:
        frames = sorted(self._cells) if frame is None else [frame]
        return with_pixel_size([r for t in frames for r in self._cells.get(t, [])],
                               self.pixel_size_um)

    def _show(self) -> None:
        um = self.pixel_size_um is not None
        unit = "um" if um else "px"
        rows = self.frame_rows()
        _set_table(self.frames_table,
                   ["frame", "cells", f"mean diam. ({unit})", "diam. CV", "overlap"],
                   [[r.frame, r.cell_count, r.mean_diameter_um if um else r.mean_diameter_px,
                     r.diameter_cv, r.overlap_fraction] for r in rows])
        if rows:
            counts = [r.cell_count for r in rows]
            self.summary.value = (f"{len(rows)} frames, {min(counts)} to {max(counts)} cells"
                                  if len(rows) > 1 else f"{counts[0]} cells")
        else:
            self.summary.value = ("no amodal label layers: run 'Segment blastomeres' first"
                                  if not self._layers else "")
        self._show_cells()
        self._draw_plot()
        self._select_current_row()

    def _show_cells(self) -> None:
        um = self.pixel_size_um is not None
        unit = "um" if um else "px"
        frame = self._current_frame()
        rows = self.cell_rows(frame)
        self.cells_label.value = f"blastomeres in frame {frame}" if len(self._embryo) > 1 \
            else "blastomeres"
        _set_table(self.cells_table,
                   ["label", f"area ({unit}²)", f"diam. ({unit})", "eccentr.", "overlap"],
                   [[r.instance, r.area_um2 if um else r.area_px,
                     r.diameter_um if um else r.diameter_px,
                     r.eccentricity, r.overlap_fraction] for r in rows])

    def _error(self, exc: Exception) -> None:
        _ui.report_error(self.status, exc)

    # --- export -------------------------------------------------------------------------------
    def export_paths(self, path: str | Path) -> tuple[Path, Path]:
        p = Path(path)
        stem = p.with_suffix("") if p.suffix.lower() == ".csv" else p
        return stem.with_name(stem.name + "_frames.csv"), stem.with_name(stem.name + "_cells.csv")

    def export_csv(self, path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
        """Write ``<stem>_frames.csv`` (one row per frame) and ``<stem>_cells.csv`` (one row
        per blastomere and frame). Existing files are refused unless ``overwrite``."""
        if self._dirty_all or self._dirty_current:
            self.flush()
        frames_csv, cells_csv = self.export_paths(path)
        if not self._embryo:
            raise BlastosegError("nothing to export: no amodal label layers are measured")
        existing = [p for p in (frames_csv, cells_csv) if p.exists()]
        if existing and not overwrite:
            raise BlastosegError(f"{existing[0]} exists already: choose another name")
        write_measurements_csv(self.frame_rows(), frames_csv)
        cells = self.cell_rows()
        if cells:
            write_measurements_csv(cells, cells_csv)
        else:
            cells_csv.write_text(",".join(InstanceMeasurements.__dataclass_fields__) + "\n")
        return frames_csv, cells_csv

    def _export_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        default = f"{self.group.value or 'embryo'}_measurements.csv".replace(":", "")
        path, _ = QFileDialog.getSaveFileName(self.native, "Export measurements as CSV",
                                              default, "CSV files (*.csv)")
        if not path:
            return
        frames_csv, cells_csv = self.export_paths(path)
        existing = [p for p in (frames_csv, cells_csv) if p.exists()]
        overwrite = False
        if existing:
            answer = QMessageBox.question(
                self.native, "Replace files?",
                "These files exist already:\n" + "\n".join(map(str, existing)) + "\nReplace them?")
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        try:
            written = self.export_csv(path, overwrite=overwrite)
        except (BlastosegError, OSError) as exc:
            self._error(exc)
            return
        self.status.value = "wrote " + " and ".join(p.name for p in written)

    def export_results(self, folder: str | Path, overwrite: bool = False) -> dict:
        """Dataset folder + label TIFFs (:func:`export_result`) and ``measurements_frames.csv``
        / ``measurements_cells.csv`` in ``folder``. An existing export is refused unless
        ``overwrite``; then every replaced file is kept as a timestamped ``.bak``."""
        from blastoseg.io.atomic import backup_existing
        from blastoseg.napari.export_results import export_result

        if self._dirty_all or self._dirty_current:
            self.flush()
        out = export_result(folder, self._image_layer(), self._layers, self.pixel_size_um,
                            overwrite=overwrite)
        csv_base = Path(folder) / "measurements.csv"
        for p in self.export_paths(csv_base):
            if p.exists():
                backup_existing(p, move=True)
        out["csv"] = self.export_csv(csv_base)
        return out

    def _export_results_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        from blastoseg.napari.export_results import export_exists

        folder = QFileDialog.getExistingDirectory(
            self.native, "Export results to a folder (create a new one for each export)")
        if not folder:
            return
        existing = export_exists(folder)
        if existing:
            answer = QMessageBox.question(
                self.native, "Replace the export?",
                f"{folder} already holds an export ({existing[0].name}). Replace it? The "
                "previous files are kept as .bak files.")
            if answer != QMessageBox.StandardButton.Yes:
                return
        try:
            out = self.export_results(folder, overwrite=bool(existing))
        except (BlastosegError, OSError) as exc:
            self._error(exc)
            return
        self.status.value = (f"exported {out['frames']} frame(s) to {folder}: dataset, "
                             f"{len(out['tiffs'])} label TIFF(s), 2 CSV files")
