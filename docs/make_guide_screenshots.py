"""Re-make the screenshots of docs/napari_guide.md from the running widgets.

Run under a (virtual) display, with the model to show (default: amodal-default):

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_guide_screenshots.py [MODEL]
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).parent / "images"
MODEL = sys.argv[1] if len(sys.argv) > 1 else "amodal-default"


def shot(viewer: napari.Viewer, name: str) -> None:
    for _ in range(20):
        QApplication.processEvents()
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(OUT / name, img)
    print("wrote", OUT / name, img.shape)


def run(widget) -> None:
    widget.start()
    if widget.worker is None and widget.run_button.text == "Segment anyway":
        widget.start()  # the localiser was unsure: use its guess (the circle shows it)
    while widget.worker is not None:
        QApplication.processEvents()


def segment(viewer: napari.Viewer, mode: str):
    _, seg = viewer.window.add_plugin_dock_widget("blastoseg", "Segment blastomeres")
    seg.reset_choices()
    seg.image.value = viewer.layers[0]
    seg.model.value = MODEL
    seg.device.value = "auto"
    seg.calibrated.value = True  # the model's own threshold, as a new user gets it
    seg.mode.value = mode
    run(seg)
    return seg


def single_frame() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 950)
    viewer.open_sample("blastoseg", "embryo")
    segment(viewer, "current frame")
    _, measure = viewer.window.add_plugin_dock_widget("blastoseg", "Measure blastomeres")
    measure.reset_choices()
    viewer.reset_view()
    shot(viewer, "guide_single_frame.png")
    viewer.close()


def timelapse() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 950)
    viewer.open_sample("blastoseg", "timelapse")
    viewer.dims.axis_labels = ("t", "y", "x")
    segment(viewer, "whole stack")
    _, measure = viewer.window.add_plugin_dock_widget("blastoseg", "Measure blastomeres")
    measure.reset_choices()
    last = viewer.layers[0].data.shape[0] - 1
    viewer.dims.set_current_step(0, last)
    viewer.reset_view()
    shot(viewer, "guide_timelapse.png")
    viewer.close()


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    single_frame()
    timelapse()
