"""Re-make the napari screenshots in docs/images from the running plugin.

Run under a (virtual) display:  xvfb-run -a python docs/make_screenshots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import napari
import numpy as np

from blastoseg.napari.layer_conversion import instances_to_label_layers
from blastoseg.synth import render_embryo

OUT = Path(__file__).parent / "images"


def shot(viewer: napari.Viewer, name: str, canvas_only: bool = False) -> None:
    img = viewer.screenshot(canvas_only=canvas_only, flash=False)
    iio.imwrite(OUT / name, img)
    print("wrote", OUT / name, img.shape)


def amodal_layers() -> None:
    """An 8-cell embryo: every amodal outline at once, in the fewest Labels layers."""
    frame = render_embryo(8, seed=3)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1200, 800)
    viewer.add_image(frame.image, name="8-cell embryo")
    for k, labels in enumerate(instances_to_label_layers([frame.instances])):
        layer = viewer.add_labels(labels[0], name=f"amodal {k + 1}")
        layer.contour = 2
    viewer.layers.selection = {viewer.layers[-1]}
    viewer.reset_view()
    shot(viewer, "napari_amodal_layers.png")
    depth = frame.instances.coverage().max()
    print(f"{frame.instances.count} cells, max depth {depth}, "
          f"{len(viewer.layers) - 1} label layers", file=sys.stderr)
    viewer.close()


def synth_widget() -> None:
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 860)
    _, widget = viewer.window.add_plugin_dock_widget("blastoseg", "Generate synthetic embryos")
    widget.size.value = 400
    widget.n_frames.value = 24
    widget.start()
    while widget.worker is not None:
        QApplication.processEvents()
    viewer.dims.set_current_step(0, 23)
    viewer.reset_view()
    shot(viewer, "napari_synth_widget.png")
    viewer.close()


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    amodal_layers()
    if "--widget" in sys.argv:
        synth_widget()
    np.random.seed(0)
