"""Dock widget "Label blastomeres": annotate or correct amodal blastomeres in an annotation
project (a dataset folder that autosaves), around :class:`~blastoseg.napari.labeling.LabelingSession`.

Painting uses napari's own tools (and napari's undo); the buttons run the edit operations of
:mod:`blastoseg.annotate.edits` on the displayed frame. Points for *ellipse*, *split* and
*propose* are clicked into the session's ``clicks`` Points layer. Edits are saved a moment after
each stroke, when the frame changes and when the widget closes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    Select,
)

from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui
from blastoseg.napari._label_operations import LabelOperationsMixin
from blastoseg.napari.result_layers import amodal_groups, iter_instances_from_layers

EMPTY = "empty (draw from scratch)"
SHORTCUTS = {  # key -> (button attribute, what it does); Alt- keys are free in napari
    "Alt-N": ("new_button", "new cell"),
    "Alt-D": ("delete_button", "delete the selected cells"),
    "Alt-M": ("merge_button", "merge the selected cells"),
    "Alt-S": ("split_button", "split the selected cell along the last two clicks"),
    "Alt-E": ("ellipse_button", "ellipse through the clicks"),
    "Alt-C": ("complete_button", "complete the selected cell's shape"),
    "Alt-P": ("propose_button", "propose the model's cell at each click"),
    "Alt-R": ("reviewed", "mark the frame reviewed"),
    "Alt-Z": ("undo_button", "undo the last operation"),
}


class LabelWidget(_ui.ScrollableDock, LabelOperationsMixin, Container):
    """Project (new / open), cells of the displayed frame, edit operations, reviewed flag."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=False, scrollable=True)  # never taller than the screen
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        self.session = None
        self._layers: list = []
        self._clicks = None
        self._frame = 0
        self._timer = None
        self._axis_kw: dict = {}
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.start_from = ComboBox(label="start from", choices=self._start_choices)
        self.new_project_button = PushButton(text="New project...")
        self.open_project_button = PushButton(text="Open project...")
        self.import_button = PushButton(text="Import...")
        self.import_button.tooltip = ("annotations from a dataset folder, a COCO json or LabelMe "
                                      "files, into a new project")
        self.project_label = Label(value="no project: create or open one")
        self.project_label.native.setWordWrap(True)  # a long note must not widen the dock
        self.cells = Select(label="cells", choices=[])
        self.cells.native.setMinimumHeight(110)
        self.new_button = PushButton(text="New cell")
        self.delete_button = PushButton(text="Delete")
        self.merge_button = PushButton(text="Merge")
        self.split_button = PushButton(text="Split")
        self.ellipse_button = PushButton(text="Ellipse from clicks")
        self.complete_button = PushButton(text="Complete shape")
        self.propose_button = PushButton(text="Propose at clicks")
        self.undo_button = PushButton(text="Undo")
        self.model = ComboBox(label="model (propose)", choices=self._models)
        self.model.tooltip = ("the model whose cell is proposed at each click: an amodal "
                              "blastomere model or a brightfield (SparseSEU-Net) model")
        self.reviewed = CheckBox(text="frame reviewed")
        self.val_fraction = FloatSpinBox(label="validation share", min=0.0, max=0.9,
                                         step=0.05, value=0.2)
        self.reviewed_only = CheckBox(text="export reviewed frames only", value=True)
        self.reviewed_only.tooltip = ("frames not marked reviewed are raw model output: "
                                      "training (and above all validating) on them teaches the "
                                      "model its own mistakes")
        self.export_button = PushButton(text="Export for training...")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        row = lambda *w: Container(layout="horizontal", labels=False, widgets=list(w))  # noqa: E731
        form = Container(labels=True, widgets=[self.image, self.start_from])
        self.extend([
            form, row(self.new_project_button, self.open_project_button, self.import_button),
            self.project_label,
            self.cells, row(self.new_button, self.delete_button, self.merge_button),
            row(self.split_button, self.ellipse_button, self.undo_button),
            row(self.complete_button, self.propose_button),
            Container(labels=True, widgets=[self.model]), self.reviewed,
            Container(labels=True, widgets=[self.val_fraction]), self.reviewed_only,
            self.export_button,
            self.status])
        self.new_project_button.changed.connect(self._new_project_dialog)
        self.open_project_button.changed.connect(self._open_project_dialog)
        self.import_button.changed.connect(self._import_dialog)
        self.cells.changed.connect(self._on_cells_selected)
        self.new_button.changed.connect(self.new_cell)
        self.delete_button.changed.connect(lambda: self._op(self.delete_selected))
        self.merge_button.changed.connect(lambda: self._op(self.merge_selected))
        self.split_button.changed.connect(lambda: self._op(self.split_selected))
        self.ellipse_button.changed.connect(lambda: self._op(self.ellipse_from_clicks))
        self.complete_button.changed.connect(lambda: self._op(self.complete_selected))
        self.propose_button.changed.connect(lambda: self._op(self.propose_at_clicks))
        self.undo_button.changed.connect(lambda: self._op(self.undo))
        self.reviewed.changed.connect(self._on_reviewed)
        self.export_button.changed.connect(self._export_dialog)
        self.image.changed.connect(lambda *_: self.start_from.reset_choices())
        _ui.default_image(self.image, self.viewer)
        self.viewer.dims.events.current_step.connect(self._on_step)
        for key, (attr, _what) in SHORTCUTS.items():
            self.viewer.bind_key(key, self._shortcut(attr), overwrite=True)
        self._set_enabled(False)

    # --- choices -------------------------------------------------------------------------
    def reset_choices(self, *args) -> None:
        """Re-list the choices (napari calls this when layers change); an empty image box
        takes the active or only image."""
        super().reset_choices(*args)
        _ui.default_image(self.image, self.viewer)

    def _image_layers(self, _widget=None) -> list:
        from napari.layers import Image

        return [(la.name, la) for la in self.viewer.layers if isinstance(la, Image)
                and not (la.metadata or {}).get("blastoseg", {}).get("role")]

    def _start_choices(self, _widget=None) -> list[str]:
        return [EMPTY, *amodal_groups(self.viewer.layers)]

    def _models(self, _widget=None) -> list:
        """(label, name) of every model that can propose cells: amodal blastomere models,
        then brightfield SparseSEU-Nets (labelled with their kind)."""
        return ([(n, n) for n in _ui.model_names("amodal")]
                + [(f"{n} (brightfield)", n) for n in _ui.model_names("brightfield")])

    def _set_enabled(self, on: bool) -> None:
        for w in (self.new_button, self.delete_button, self.merge_button, self.split_button,
                  self.ellipse_button, self.complete_button, self.propose_button,
                  self.undo_button, self.reviewed, self.export_button, self.cells):
            w.enabled = on

    def _shortcut(self, attr: str):
        def press(_viewer):
            w = getattr(self, attr)
            if self.session is None or not w.enabled:
                return
            if isinstance(w, CheckBox):
                w.value = not w.value
            else:
                w.changed.emit(True)
        return press

    # --- project -------------------------------------------------------------------------
    def new_project(self, folder: str | Path, overwrite: bool = False) -> None:
        """Create a project in ``folder`` from the chosen image and start (empty or a result)."""
        from blastoseg.annotate import AnnotationProject

        layer = self.image.value
        if layer is None:
            raise BlastosegError("choose the image to annotate first")
        if (Path(folder) / "annotations.json").exists() and not overwrite:
            raise BlastosegError(f"{folder} already holds an annotation project: open it with "
                                 "'Open project...', or choose an empty folder")
        data = np.asarray(layer.data)
        if data.ndim - (1 if layer.rgb else 0) not in (2, 3):
            raise BlastosegError(f"annotate a 2D frame or a (T, Y, X) time-lapse; this image is "
                                 f"{data.shape}: open one focal plane as its own layer first")
        n = 1 if data.ndim - (1 if layer.rgb else 0) == 2 else data.shape[0]
        instances = None
        group = self.start_from.value
        if group and group != EMPTY:
            first, frames, _ = iter_instances_from_layers(amodal_groups(self.viewer.layers)[group])
            found = {first + i: f for i, f in enumerate(frames)}
            from blastoseg.instances import FrameInstances

            shape = data.shape[-3:-1] if layer.rgb else data.shape[-2:]
            instances = [found.get(t, FrameInstances.empty(tuple(shape))) for t in range(n)]
        pixel = (layer.metadata or {}).get("pixel_size_um")
        project = AnnotationProject.create(folder, data, instances, pixel_size_um=pixel,
                                           source=layer.name, overwrite=overwrite)
        self.show_project(project, layer.name)

    def open_project(self, folder: str | Path, read_only: bool = False) -> None:
        """Open a project; ``read_only`` to look at one that is open elsewhere (another napari
        or a script holds its lock): nothing can be edited and nothing is saved."""
        from blastoseg.annotate import AnnotationProject

        project = AnnotationProject.open(folder, read_only=read_only)
        name = Path(folder).name
        if name not in self.viewer.layers:
            stack = np.stack([project.image(t) for t in range(project.n_frames)])
            self.viewer.add_image(stack if project.n_frames > 1 else stack[0], name=name,
                                  metadata={"pixel_size_um": project.pixel_size_um}
                                  if project.pixel_size_um else {})
        self.show_project(project, name)

    def import_annotations(self, source: str | Path, folder: str | Path) -> None:
        """Annotations from our dataset format, COCO or LabelMe, as a new project in ``folder``
        (its images are opened as a layer)."""
        from blastoseg.annotate import import_project

        if (Path(folder) / "annotations.json").exists():
            raise BlastosegError(f"{folder} already holds an annotation project: choose an "
                                 "empty folder for the import")
        import_project(source, folder)
        self.open_project(folder)

    def show_project(self, project, image_name: str) -> None:
        """Replace any previous session's layers with this project's."""
        from blastoseg.napari.labeling import LabelingSession, annotation_group

        self.close_project()
        group = annotation_group(image_name)
        self.session = LabelingSession.start(project, group)
        image = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
        ndim = 2 if project.n_frames == 1 else 3
        # the image's axis names (e.g. "t"), so the slider keeps its label
        labels = tuple(getattr(image, "axis_labels", ()) or ())
        self._axis_kw = {"axis_labels": labels} if len(labels) == ndim else {}
        for k in range(len(self.session.layers)):
            self._add_layer(k)
        self._clicks = self.viewer.add_points(
            ndim=ndim, name=f"{group}: clicks", size=8, face_color="yellow", **self._axis_kw,
            metadata={"blastoseg": {"group": group, "role": "clicks"}})
        self._clicks.mode = "add"
        self.viewer.layers.selection.active = self._layers[0]
        self._frame = self._current_frame()
        self._set_enabled(True)
        # the folder's name only (a full path would widen the dock past the screen); the
        # whole path is the tooltip
        name = project.root.name
        name = name if len(name) <= 40 else f"{name[:24]}...{name[-13:]}"  # no break inside
        self.project_label.value = f"project: {name} ({project.n_frames} frame(s))"
        self.project_label.tooltip = str(project.root)
        if project.read_only:  # open elsewhere: look, export, but no edit that would be lost
            for w in (self.new_button, self.delete_button, self.merge_button, self.split_button,
                      self.ellipse_button, self.complete_button, self.propose_button,
                      self.undo_button, self.reviewed):
                w.enabled = False
            for la in self._layers:
                la.editable = False
            self.project_label.value += " - READ-ONLY (open elsewhere): edits are not saved"
        self.refresh()

    def close_project(self) -> None:
        if self.session is not None:
            self.flush()
            self.session.project.close()  # another napari or script may save it now
        for la in [*self._layers, self._clicks]:
            if la is not None and la in self.viewer.layers:
                self.viewer.layers.remove(la)
        self.session, self._layers, self._clicks = None, [], None
        self._set_enabled(False)

    def _add_layer(self, k: int) -> None:
        kw = self.session.layer_kwargs(k)
        layer = self.viewer.add_labels(self.session.layers[k], **kw, **self._axis_kw)
        layer.contour = 2
        layer.events.paint.connect(self._on_paint)
        layer.events.selected_label.connect(self._on_label_picked)
        self._layers.append(layer)

    def _sync_new_layers(self, _added: int = 0) -> None:
        """Show any layers the session appended (an edit may need one more layer)."""
        while len(self._layers) < len(self.session.layers):
            self._add_layer(len(self._layers))

    # --- frames, cells, saving -------------------------------------------------------------
    def _current_frame(self) -> int:
        if self.session is None or self.session.project.n_frames == 1:
            return 0
        step = self.viewer.dims.current_step[0]
        return int(np.clip(step, 0, self.session.project.n_frames - 1))

    def _on_step(self, _event=None) -> None:
        if self.session is None:
            return
        t = self._current_frame()
        if t != self._frame:
            self.flush()  # the frame being left is saved before the next one is shown
            self._frame = t
            self.refresh()

    def _on_paint(self, _event=None) -> None:
        from qtpy.QtCore import QTimer

        if self._timer is None:
            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.flush)
        self._timer.start(1000)  # save a moment after the last stroke

    def flush(self) -> None:
        """Read the displayed frame back from the layers and save the project now."""
        if self.session is None:
            return
        if self._timer is not None:
            self._timer.stop()
        try:
            self.session.sync_frame(self._frame)
        except (BlastosegError, OSError) as exc:
            self._error(exc)
            return
        self.refresh(save_note=True)

    def refresh(self, save_note: bool = False) -> None:
        if self.session is None:
            return
        t = self._frame
        rows = self.session.cells(t)
        with self.cells.changed.blocked():
            self.cells.choices = [(f"cell {r['label']}  ({r['area']} px, layer {r['layer'] + 1})",
                                   r["id"]) for r in rows]
        with self.reviewed.changed.blocked():
            self.reviewed.value = self.session.project.reviewed(t)
        proj = self.session.project
        done = len(proj.reviewed_frames())
        self.status.value = (f"frame {t}: {len(rows)} cells; {done} of {proj.n_frames} frames "
                             "reviewed" + ("; saved" if save_note and not proj.is_dirty else ""))

    def _selected(self) -> list[int]:
        return [int(v) for v in (self.cells.value or [])]

    def _on_cells_selected(self, *_args) -> None:
        """Select the cell in napari: its layer becomes active with its label picked."""
        ids = self._selected()
        if not ids or self.session is None:
            return
        row = next((r for r in self.session.cells(self._frame) if r["id"] == ids[-1]), None)
        if row is not None:
            layer = self._layers[row["layer"]]
            self.viewer.layers.selection.active = layer
            layer.selected_label = row["label"]

    def _on_label_picked(self, event=None) -> None:
        """A cell picked on the canvas (napari's picker) is selected in the list too."""
        layer = getattr(event, "source", None)
        value = int(getattr(layer, "selected_label", 0) or 0)
        if value and value - 1 in self.cells.choices and value - 1 not in self._selected():
            with self.cells.changed.blocked():
                self.cells.value = [value - 1]

    def _on_reviewed(self, value: bool) -> None:
        if self.session is not None:
            self.session.project.set_reviewed(self._frame, bool(value))
            self.flush()

    # --- export --------------------------------------------------------------------------
    def export_for_training(self, out_dir: str | Path, overwrite: bool = False):
        from blastoseg.annotate import export_for_training

        self.flush()
        proj = self.session.project
        split_by = "frame" if proj.n_frames > 1 else "video"
        return export_for_training([proj], out_dir, val_fraction=self._val_share(),
                                   split_by=split_by, overwrite=overwrite,
                                   reviewed_only=bool(self.reviewed_only.value))

    def _val_share(self) -> float:
        """The validation share asked for, or 0 when at most one frame can be exported (a
        single corrected image is a valid fine-tune set; it just has no validation)."""
        proj = self.session.project
        n = len(proj.reviewed_frames()) if self.reviewed_only.value else proj.n_frames
        return float(self.val_fraction.value) if n > 1 else 0.0

    def _export_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Export for training to a folder")
        if not folder:
            return
        try:
            out = self.export_for_training(folder)
        except (BlastosegError, ValueError, OSError) as exc:
            self._error(exc)
            return
        proj = self.session.project
        which = (f"the {len(proj.reviewed_frames())} reviewed of {proj.n_frames} frames"
                 if self.reviewed_only.value else f"all {proj.n_frames} frames, reviewed or not")
        self.status.value = (f"exported {out.n_train} training + {out.n_val} validation frames "
                             f"from {which}")
        if out.n_val == 0 and self.val_fraction.value > 0:
            self.status.value += ("; one frame is too few to hold one out, so the fine-tune "
                                  "runs without validation")

    def _new_project_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "New annotation project folder")
        if folder:
            self._op(lambda: self.new_project(folder))

    def _import_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        source, _ = QFileDialog.getOpenFileName(
            self.native, "Import annotations: annotations.json (ours or COCO) or a LabelMe .json",
            "", "Annotations (*.json)")
        if not source:
            return
        folder = QFileDialog.getExistingDirectory(self.native, "New project folder for them")
        if folder:
            self._op(lambda: self.import_annotations(source, folder))

    def _open_project_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Open an annotation project")
        if folder:
            self._op(lambda: self._open_or_look(folder))

    def _open_or_look(self, folder: str) -> None:
        """Open ``folder``; when it is open elsewhere, offer to open it read-only."""
        from qtpy.QtWidgets import QMessageBox

        from blastoseg.annotate.project_lock import ProjectLockedError

        try:
            self.open_project(folder)
        except ProjectLockedError as exc:
            answer = QMessageBox.question(self.native, "Project open elsewhere",
                                          f"{exc}.\n\nOpen it read-only?")
            if answer != QMessageBox.StandardButton.Yes:
                raise
            self.open_project(folder, read_only=True)

    def _error(self, exc: Exception) -> None:
        _ui.report_error(self.status, exc)
