"""Issue 18 item 6: segmenting, deleting all layers, opening another image and segmenting
again could kill napari (segfault in glDrawArrays under Mesa's llvmpipe). napari flushes
vispy's GL commands on a layer removal (``context.finish()``) while Qt's compositing context
is current, not the canvas's; blastoseg's widgets make the canvas's context current first
(docs/napari_crash.md). A segfault would kill pytest itself, so the whole path also runs once
in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[1]


def _guards(viewer) -> int:
    return sum(getattr(cb, "_blastoseg_gl_guard", False)
               for cb in viewer.layers.events.removing.callbacks)


def test_every_widget_guards_its_viewer_once(make_napari_viewer):
    from blastoseg.napari._measure_widget import MeasureWidget
    from blastoseg.napari._segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    assert _guards(viewer) == 0
    SegmentWidget(viewer)
    MeasureWidget(viewer)
    SegmentWidget(viewer)
    assert _guards(viewer) == 1
    assert sum(getattr(cb, "_blastoseg_gl_guard", False)
               for cb in viewer.layers.events.begin_batch.callbacks) == 1


def test_a_viewer_without_a_window_or_canvas_is_left_alone():
    from napari.components import ViewerModel

    from blastoseg.napari.gl_context import guard_layer_removal, make_canvas_current

    model = ViewerModel()
    assert make_canvas_current(model) is False  # no window: nothing to make current
    assert guard_layer_removal(model) is True
    model.add_image(np.zeros((8, 8)))
    model.layers.pop(0)  # the guard runs and does nothing
    assert guard_layer_removal(object()) is False


def _segment_like_result(viewer, image_name: str, seed: int) -> None:
    """The layers a Segment run adds: occlusion, visible, amodal k, centroids with text."""
    from blastoseg.napari.result_layers import result_layer_data
    from blastoseg.synth import render_embryo

    sample = render_embryo(4, seed=seed)
    viewer.add_image(sample.image, name=image_name)
    for data, kwargs, kind in result_layer_data([sample.instances], image_name):
        getattr(viewer, f"add_{kind}")(data, **kwargs)


def test_napari_flushes_removals_with_the_canvas_context_current(make_napari_viewer, qtbot):
    """What the workaround changes: at each of napari's GL flushes after a removal, the
    current GL context is the canvas's own (without the guard it is Qt's compositing one)."""
    from qtpy.QtGui import QOpenGLContext

    from blastoseg.napari._segment_widget import SegmentWidget
    from blastoseg.napari.gl_context import canvas_gl_widget

    viewer = make_napari_viewer(show=True)
    viewer.window.add_dock_widget(SegmentWidget(viewer), area="right")
    native = canvas_gl_widget(viewer)
    assert native is not None
    context = viewer.window._qt_viewer.canvas._scene_canvas.context
    flushes: list[bool] = []
    finish = context.finish

    def finish_and_record():
        current, own = QOpenGLContext.currentContext(), native.context()
        flushes.append(current is not None and own is not None
                       and _same(current, own))
        finish()

    context.finish = finish_and_record
    for round_ in range(2):
        _segment_like_result(viewer, f"embryo {round_}", seed=3 + round_)
        qtbot.wait(200)  # the canvas draws the result
        assert native.context() is not None and native.context().isValid()
        if round_ == 0:  # delete all at once (remove_selected: one batched flush)
            viewer.layers.select_all()
            viewer.layers.remove_selected()
        else:  # one by one from the bottom, the canvas drawing in between
            for layer in list(viewer.layers):
                viewer.layers.remove(layer)
                qtbot.wait(50)
        qtbot.wait(100)
    assert len(viewer.layers) == 0
    assert flushes and all(flushes), flushes


def _same(a, b) -> bool:
    from qtpy import API_NAME

    sip = __import__(f"{API_NAME}.sip" if API_NAME.startswith("PyQt") else "sip",
                     fromlist=["unwrapinstance"])
    return sip.unwrapinstance(a) == sip.unwrapinstance(b)


@pytest.mark.slow
def test_segment_delete_open_segment_again_survives_in_a_subprocess():
    """The reproducer's rounds with the centroid Points and the guard: exit 0, not 139."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "napari_crash_reproducer.py"), "5",
         "--rounds", "3", "--points", "--guard"],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    assert "survived" in run.stdout
