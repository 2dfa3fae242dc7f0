"""Issue 18 item 7: Segment + Measure + Manage models docked together made the window taller
than the screen (the Export buttons off-screen). Every dock of the plugin scrolls instead:
napari docks its ``.native``, which must be the scroll area, not the form inside it."""

from __future__ import annotations

import importlib

import pytest
import yaml

pytestmark = pytest.mark.gui


def _widget_classes():
    from importlib.resources import files

    manifest = yaml.safe_load(files("blastoseg").joinpath("napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    for w in manifest["contributions"]["widgets"]:
        module, name = commands[w["command"]].split(":")
        yield w["display_name"], getattr(importlib.import_module(module), name)


def test_every_dock_scrolls(make_napari_viewer):
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer()
    classes = list(_widget_classes())
    assert len(classes) >= 10
    for name, cls in classes:
        widget = cls(viewer)
        assert isinstance(widget.native, QScrollArea), f"{name}: its dock does not scroll"


def test_three_docks_fit_a_small_screen(make_napari_viewer, qtbot):
    from blastoseg.napari._measure_widget import MeasureWidget
    from blastoseg.napari._models_widget import ModelsWidget
    from blastoseg.napari._segment_widget import SegmentWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    for cls in (SegmentWidget, MeasureWidget, ModelsWidget):
        viewer.window.add_dock_widget(cls(viewer), area="right")
    window.resize(1000, 700)
    qtbot.wait(50)
    # the docks' minimum heights together must not force the window past 700 px
    assert window.minimumSizeHint().height() <= 700, window.minimumSizeHint()
    assert window.height() <= 700
