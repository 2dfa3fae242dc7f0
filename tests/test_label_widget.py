"""The "Label blastomeres" widget under a virtual display: project from a result, operations,
painting, autosave, reopen, export for training."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.gui]


@pytest.fixture()
def viewer_with_result(make_napari_viewer):
    from napari.layers import Layer

    from blastoseg.napari.result_layers import apply_display, result_layer_data
    from blastoseg.synth import EmbryoConfig, render_timelapse

    lapse = render_timelapse(34, seed=2, config=EmbryoConfig(image_size=(160, 160)))
    images, frames = lapse.images[-3:], lapse.frames[-3:]
    viewer = make_napari_viewer()
    viewer.add_image(images, name="lapse")
    for tup in result_layer_data(frames, "lapse"):
        layer = Layer.create(*tup)
        viewer.add_layer(layer)
        apply_display(layer)
    return viewer, images, frames


def _widget(viewer):
    from blastoseg.napari._label_widget import LabelWidget

    widget = LabelWidget(viewer)
    widget.reset_choices()
    widget.image.value = viewer.layers["lapse"]
    return widget


def test_project_from_a_result_edit_save_reopen_export(viewer_with_result, tmp_path, qtbot,
                                                       monkeypatch):
    from blastoseg.annotate import AnnotationProject
    from blastoseg.io import read_dataset

    viewer, images, frames = viewer_with_result
    widget = _widget(viewer)
    assert not widget.delete_button.enabled  # nothing to edit before a project is open
    widget.start_from.value = "lapse"
    widget.new_project(tmp_path / "proj")
    group = "annotated lapse"
    amodal = [la for la in viewer.layers if la.name.startswith(f"{group}: amodal")]
    assert amodal and all(la.data.shape == images.shape for la in amodal)
    assert all(la.contour > 0 for la in amodal)
    viewer.dims.set_current_step(0, 2)
    assert widget._frame == 2
    n = len(frames[2])
    assert len(widget.cells.choices) == n

    # merge two cells from the list; the project is saved at once
    ids = list(widget.cells.choices)
    widget.cells.value = ids[:2]
    widget.merge_selected()
    widget.refresh()
    assert len(widget.cells.choices) == n - 1
    assert len(AnnotationProject.open(tmp_path / "proj").instances(2)) == n - 1
    widget.undo()
    widget.refresh()
    assert len(widget.cells.choices) == n

    # a new cell painted with napari's brush is saved after the stroke
    widget.new_cell()
    layer = viewer.layers.selection.active
    label = layer.selected_label
    layer.brush_size = 8
    layer.paint((2, 15, 15), label)
    qtbot.waitUntil(lambda: not widget.session.project.is_dirty and
                    label - 1 in AnnotationProject.open(tmp_path / "proj").instances(2).track_ids,
                    timeout=5000)

    # an ellipse through clicked edge points becomes a new cell; the shortcut deletes it again
    widget._clicks.data = np.array([[2, 140, 130], [2, 150, 140], [2, 140, 150], [2, 130, 140],
                                    [2, 133, 133]], dtype=float)
    widget.ellipse_from_clicks()
    widget.refresh()
    assert len(widget.cells.choices) == n + 2
    assert len(widget._clicks.data) == 0
    newest = max(widget.cells.choices)
    widget.cells.value = [newest]
    widget._shortcut("delete_button")(viewer)
    widget.refresh()
    assert len(widget.cells.choices) == n + 1

    widget.reviewed.value = True
    assert AnnotationProject.open(tmp_path / "proj").reviewed(2)

    # reopening restores every cell exactly (same label values and masks; the packing into
    # layers is recomputed, so a cell may sit in another layer than before)
    def cells_of(w, t):
        inst = w.session.read_frame(t)
        return {int(i): m for i, m in zip(inst.track_ids, inst.masks, strict=True)}

    saved = [cells_of(widget, t) for t in range(3)]
    widget.close_project()
    assert not [la for la in viewer.layers if la.name.startswith(group)]
    widget.open_project(tmp_path / "proj")
    viewer.dims.set_current_step(0, 2)
    widget._on_step()
    for t in range(3):
        restored = cells_of(widget, t)
        assert restored.keys() == saved[t].keys()
        for k, m in saved[t].items():
            np.testing.assert_array_equal(m, restored[k])
    assert widget.reviewed.value

    # by default only reviewed frames are exported (issue 18 item 3): here 1 of 3, too few to
    # hold one out, so it is exported for training alone (a single corrected frame is a valid
    # fine-tune set) and the status line says there is no validation
    assert widget.reviewed_only.value
    with monkeypatch.context() as m:
        m.setattr("qtpy.QtWidgets.QFileDialog.getExistingDirectory",
                  lambda *a, **k: str(tmp_path / "reviewed"))
        widget._export_dialog()
    assert "exported 1 training + 0 validation frames" in widget.status.value
    assert "runs without validation" in widget.status.value
    assert not (tmp_path / "reviewed" / "val").exists()
    assert len(read_dataset(tmp_path / "reviewed" / "train")) == 1
    widget.val_fraction.value = 0.2
    widget.reviewed_only.value = False  # the user's explicit choice: every annotated frame
    out = widget.export_for_training(tmp_path / "retrain")
    assert out.n_train + out.n_val == 3
    assert len(read_dataset(out.train_dir)) == out.n_train


def test_empty_project_and_clear_errors(viewer_with_result, tmp_path):
    viewer, images, _ = viewer_with_result
    widget = _widget(viewer)
    widget.new_project(tmp_path / "empty")
    assert widget.cells.choices == ()
    from blastoseg.errors import BlastosegError

    with pytest.raises(BlastosegError, match="select two"):
        widget.merge_selected()
    with pytest.raises(BlastosegError, match="already holds"):
        widget.new_project(tmp_path / "empty")  # never overwritten silently
    widget.status.value = ""
    widget._op(widget.delete_selected)  # the form shows errors instead of raising
    assert widget.status.value.startswith("error:")


def test_import_into_a_project_and_pick_on_the_canvas(viewer_with_result, tmp_path):
    from blastoseg.annotate import AnnotationProject
    from blastoseg.io import Sample, write_dataset

    viewer, images, frames = viewer_with_result
    write_dataset(tmp_path / "ds", [Sample(image=im, instances=f)
                                    for im, f in zip(images, frames, strict=True)])
    widget = _widget(viewer)
    widget.import_annotations(tmp_path / "ds" / "annotations.json", tmp_path / "imported")
    assert AnnotationProject.open(tmp_path / "imported").n_frames == 3
    assert "imported" in viewer.layers  # its images, opened as a layer
    viewer.dims.set_current_step(0, 1)
    widget._on_step()
    assert len(widget.cells.choices) == len(frames[1])
    # picking a cell on the canvas (napari's picker sets selected_label) selects it in the list
    row = widget.session.cells(1)[-1]
    widget._layers[row["layer"]].selected_label = row["label"]
    assert widget.cells.value == [row["id"]]


def test_a_project_open_elsewhere_opens_read_only(make_napari_viewer, tmp_path, monkeypatch):
    """Issue 18 item 17: "Open project..." on a project another process holds says "open
    elsewhere" and offers a read-only look: its cells are shown, nothing can be edited, and
    nothing is written when it is closed."""
    import subprocess
    import sys
    import textwrap

    from qtpy.QtWidgets import QFileDialog, QMessageBox

    from blastoseg.annotate import AnnotationProject
    from blastoseg.annotate.project_lock import LOCK_FILE, ProjectLockedError
    from blastoseg.instances import FrameInstances

    folder = tmp_path / "proj"
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 8:20, 8:20] = True
    AnnotationProject.create(folder, np.zeros((2, 32, 32), np.uint8),
                             [FrameInstances(masks=masks)] * 2).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from blastoseg.annotate import AnnotationProject
        p = AnnotationProject.open(sys.argv[1])
        p.set_reviewed(0, True)
        p.save()
        print("saved", flush=True)
        time.sleep(120)
        """), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "saved"
        before = (folder / "annotations.json").read_bytes()
        from blastoseg.napari._label_widget import LabelWidget

        widget = LabelWidget(make_napari_viewer())
        with pytest.raises(ProjectLockedError, match="open elsewhere"):
            widget.open_project(folder)
        # the dialog path: the user picks the folder and answers Yes to "Open it read-only?"
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
        asked = []
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or
                            QMessageBox.StandardButton.Yes)
        widget._open_project_dialog()
        assert asked and "open elsewhere" in asked[0]
        assert widget.session is not None and widget.session.project.read_only
        assert "READ-ONLY" in widget.project_label.value
        assert widget.reviewed.value  # the holder's saved edit is shown
        assert not widget.delete_button.enabled and not widget.reviewed.enabled
        assert widget.export_button.enabled
        assert all(not la.editable for la in widget._layers)
        widget.close_project()
        assert (folder / "annotations.json").read_bytes() == before
        assert (folder / LOCK_FILE).exists()  # still the holder's
    finally:
        holder.kill()
        holder.wait()


def test_an_open_project_does_not_widen_the_dock(make_napari_viewer, tmp_path):
    """The project line names the folder (its path in the tooltip) and wraps: a long path
    or the read-only note made the dock 845 px wide, past a 504 px panel."""
    from blastoseg.annotate.project import AnnotationProject
    from blastoseg.napari._label_widget import LabelWidget
    from blastoseg.synth import render_embryo

    folder = tmp_path / ("a_rather_long_project_folder_name_" * 3)
    AnnotationProject.create(folder, [render_embryo(2, seed=1, ).image])
    widget = LabelWidget(make_napari_viewer())
    before = widget.native.widget().minimumSizeHint().width()
    widget.open_project(folder, read_only=True)
    assert widget.native.widget().minimumSizeHint().width() <= max(before, 420)
    assert widget.project_label.tooltip == str(folder) and "READ-ONLY" in widget.project_label.value
