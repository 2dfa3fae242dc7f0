"""Re-make the screenshot of docs/labeling.md from the running "Label blastomeres" widget.

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_labeling_screenshots.py [MODEL]

Segments the sample time-lapse with MODEL (default amodal-default), starts an annotation project
from the result in a temporary folder, selects a cell and puts clicks for an ellipse.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import napari
import numpy as np
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).parent / "images"
MODEL = sys.argv[1] if len(sys.argv) > 1 else "amodal-default"


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 1000)
    viewer.open_sample("blastoseg", "timelapse")
    _, seg = viewer.window.add_plugin_dock_widget("blastoseg", "Segment blastomeres")
    seg.reset_choices()
    seg.image.value = viewer.layers[0]
    seg.model.value = MODEL
    seg.calibrated.value = True
    seg.mode.value = "whole stack"
    seg.start()
    while seg.worker is not None:
        QApplication.processEvents()
    viewer.window.remove_dock_widget("all")
    _, lab = viewer.window.add_plugin_dock_widget("blastoseg", "Label blastomeres")
    lab.reset_choices()
    lab.image.value = viewer.layers[0]
    lab.start_from.value = viewer.layers[0].name
    folder = Path(tempfile.mkdtemp()) / "embryo_project"
    lab.new_project(folder)
    for layer in viewer.layers:
        if layer.name.startswith(viewer.layers[0].name + ":"):
            layer.visible = False  # the model's result: the project's layers show it now
    viewer.dims.set_current_step(0, 28)
    lab._on_step()
    choices = list(lab.cells.choices)
    lab.cells.value = choices[:1]
    lab._clicks.data = np.array([[28, 190, 330], [28, 230, 360], [28, 280, 350]], dtype=float)
    lab.reviewed.value = True
    viewer.reset_view()
    for _ in range(30):
        QApplication.processEvents()
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(OUT / "napari_labeling.png", img)
    print("wrote", OUT / "napari_labeling.png", img.shape)
    viewer.close()


if __name__ == "__main__":
    main()
