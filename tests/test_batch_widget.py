"""The napari "Batch" widget: a real batch (tiny count model, 2 embryos, one worker thread)
fills the table live, reports the dashboard, opens a finished embryo; Cancel stops a batch
and leaves its embryos pending; a bad form is refused in the status line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")
pytestmark = pytest.mark.gui


def _input(tmp_path, n=2):
    root = tmp_path / "input"
    root.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        tifffile.imwrite(root / f"E{k + 1}.tif",
                         rng.integers(0, 255, (2, 64, 64), dtype=np.uint8),
                         photometric="minisblack")
    return root


def _widget(make_napari_viewer, tmp_path, tasks=("count",)):
    from blastoseg.napari._batch_widget import BatchWidget

    viewer = make_napari_viewer()
    widget = BatchWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Batch")
    widget.input_dir.value = _input(tmp_path)
    widget.output_dir.value = tmp_path / "out"
    for task, box in widget.task_boxes.items():
        box.value = task in tasks
    widget.models.value = "count=tiny-count"
    widget.device.value = "cpu"
    widget.workers.value = 1
    return viewer, widget


def test_the_widget_runs_a_batch_and_opens_a_done_embryo(
        make_napari_viewer, qtbot, tiny_count, tmp_path, monkeypatch):
    import blastoseg.batch.run as run

    viewer, widget = _widget(make_napari_viewer, tmp_path)
    # threads, not processes: fast to start, and the test's tiny model home is shared
    real = run.iter_batch
    monkeypatch.setattr(run, "iter_batch", lambda *a, **k: real(*a, **k, processes=False))
    monkeypatch.setattr("blastoseg.batch.iter_batch", run.iter_batch)
    widget.start()
    seen = []  # signals queue up for this (GUI) thread: nothing is missed
    widget.worker.yielded.connect(lambda u: seen.append(u.event))
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert "finished: 2 done, 0 failed" in widget.status.value
    assert seen[0] == "start" and seen.count("done") == 2 and seen[-1] == "finished"
    assert widget.table.native.rowCount() == 2
    assert [widget.row_state(n) for n in ("E1", "E2")] == ["done", "done"]
    assert widget.dashboard.value.startswith('<a href="http')
    assert widget.progress.value == 2
    layers = widget.open_row(0)
    assert [layer.name for layer in layers] == ["E1", "E1 density"]
    assert layers[1].data.dtype == np.float32  # the density map
    assert widget.open_row(5) == [] and "only a done embryo" in widget.status.value
    # a second run shows the embryos as done before and runs nothing
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.row_state("E1") == "done (earlier run)"
    assert "0 done, 0 failed, 2 done earlier" in widget.status.value


def test_cancel_leaves_the_embryos_pending(make_napari_viewer, qtbot, tiny_count, tmp_path,
                                           monkeypatch):
    import blastoseg.batch.run as run

    viewer, widget = _widget(make_napari_viewer, tmp_path)
    real = run.iter_batch
    monkeypatch.setattr("blastoseg.batch.iter_batch",
                        lambda *a, **k: real(*a, **k, processes=False))
    widget.start()
    widget.cancel()  # before the first embryo finishes
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value.startswith("cancelled")
    states = {k: v["state"] for k, v in json.loads(
        (tmp_path / "out" / "manifest.json").read_text())["embryos"].items()}
    assert set(states.values()) <= {"pending", "done"} and "pending" in states.values()


def test_a_bad_form_is_refused(make_napari_viewer, tmp_path):
    viewer, widget = _widget(make_napari_viewer, tmp_path, tasks=())
    widget.start()
    assert widget.worker is None and "choose at least one task" in widget.status.value
    widget.task_boxes["count"].value = True
    widget.models.value = "count"
    widget.start()
    assert widget.worker is None and "TASK=MODEL" in widget.status.value


def test_the_form_and_the_table_fit_a_narrow_dock(make_napari_viewer, qtbot, tmp_path):
    """At the width napari docks it (about 370 px), nothing is cut off: the form needs less
    than the dock's viewport (three task boxes a row and the final status made it 366-383 px
    wide), and a long error wraps in the last column, which stretches, with all of it in the
    tooltip (it was sized to the message and ran out of the dock)."""
    from blastoseg.batch.run import BatchUpdate
    from blastoseg.napari._batch_widget import COLUMNS

    viewer, widget = _widget(make_napari_viewer, tmp_path)
    error = "timeline: could not read frame F0004_34.9h.png (truncated file: 60 bytes)"
    widget.on_update(BatchUpdate("start", total=2, embryos=[("WELL01", "pending"),
                                                             ("WELL03", "pending")]))
    widget.on_update(BatchUpdate("failed", embryo="WELL03", failed=1, total=2, error=error,
                                 worker="tcp://127.0.0.1:4001"))
    widget.status.value = ("finished: 1 done, 1 failed, 0 done earlier, 0 pending; summary.csv "
                           "and manifest.json in the output folder; double-click a done "
                           "embryo to open it")
    scroll = widget.native
    scroll.resize(370, 900)
    qtbot.wait(50)
    form = scroll.widget()
    assert form.minimumSizeHint().width() <= 340
    assert form.minimumSizeHint().width() <= scroll.viewport().width()
    table = widget.table.native
    assert table.horizontalHeader().stretchLastSection()
    assert not table.verticalHeader().isVisible()
    last = len(COLUMNS) - 1
    widths = sum(table.columnWidth(c) for c in range(len(COLUMNS)))
    assert widths <= table.viewport().width() + 1  # no column out of view
    cell = table.item(1, last)
    assert cell.text() == error and cell.toolTip() == error
    assert table.rowHeight(1) > table.rowHeight(0)  # wrapped over lines
