"""Re-make docs/images/overlap_widget.png and docs/images/probability_preview.png from the plugin.

Renders a synthetic brightfield scene (:mod:`blastoseg.synth.brightfield`), docks "Overlap map"
and runs it, then docks "Probability-map preview" on the scene's ground-truth cells (amodal,
overlapping) with its nuclei, and photographs both.

The model is the shipped ``overlap-default`` when it is installed. Without it, a tiny SE-U-Net is
trained for a few steps in a throw-away BLASTOSEG_HOME (the recipe of the test fixture
``tiny_overlap``, under a minute on a CPU): the widget and its layers look right, but the maps
are those of an untrained model; re-run this script once ``overlap-default`` exists.

Run under a (virtual) display::

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_overlap_screenshots.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from screenshot_setup import close_toasts, wait

OUT = Path(__file__).parent / "images"
TMP = Path(tempfile.mkdtemp(prefix="blastoseg-overlap-shots-"))
SIZE = 512
SEED = 7
os.environ["BLASTOSEG_HOME"] = str(TMP / "home")  # widget settings and the tiny model go here


def widen_layer_list(viewer, width: int = 380) -> None:
    """Room for the long layer names ("<image> cytoplasm probability")."""
    from qtpy.QtCore import Qt

    qt = viewer.window._qt_viewer
    docks = [qt.dockLayerList, qt.dockLayerControls]
    viewer.window._qt_window.resizeDocks(docks, [width] * len(docks), Qt.Orientation.Horizontal)


def shot(viewer, name: str) -> None:
    import imageio.v3 as iio
    from qtpy.QtWidgets import QApplication

    close_toasts()
    widen_layer_list(viewer)
    for _ in range(10):  # let Qt lay out the docks, then fit the image to the canvas left
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.reset_view()
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.05)
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(OUT / name, img)
    print("wrote", OUT / name, img.shape)


def model_name() -> str:
    """overlap-default if installed; else a tiny model trained in a throw-away home."""
    from blastoseg.weights import list_models

    if any(m.name == "overlap-default" for m in list_models(kind="overlap")):
        return "overlap-default"
    from blastoseg.cli import main as cli

    print("overlap-default is not installed: training a tiny model for the screenshots "
          "(re-run this script once the shipped model exists)")
    data = TMP / "bf"
    assert cli(["synth", "brightfield", "--n", "3", "--seed", "2", "--size", "96",
                "--out", str(data)]) == 0
    cfg = TMP / "ov.json"
    cfg.write_text(json.dumps({
        "seunet": {"base_width": 4, "depth": 2, "se_reduction": 2},
        "probability": {"variant": "combined_border_overlap"},
        "data": {"crop": 64, "repeats": 2},
        "hyper": {"max_steps": 4, "batch_size": 2, "lr": 0.01, "val_frames": 2}}))
    assert cli(["train", "overlap", "--data", str(data), "--val", str(data),
                "--out", str(TMP / "job"), "--config", str(cfg), "--name", "tiny-overlap",
                "--quiet"]) == 0
    return "tiny-overlap"


def scene():
    from blastoseg.synth.brightfield import BrightfieldConfig, render_brightfield

    # the look of overlap-default's training data (larger cells than the renderer's default;
    # benchmarks/make_brightfield_data.py), on a seed no training scene used
    cfg = BrightfieldConfig.from_dict({**BrightfieldConfig().for_size(SIZE).to_dict(),
                                       "cell_length_px": [90.0, 220.0], "n_cells": [4.0, 11.0]})
    return render_brightfield(SEED, cfg)


def overlap_shot(model: str, sc) -> None:
    import napari

    from blastoseg.napari._overlap_widget import OverlapWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 1000)
    viewer.add_image(sc.planes[0], name="brightfield")
    widget = OverlapWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Overlap map", area="right")
    widget.reset_choices()
    widget.image.value = viewer.layers["brightfield"]
    widget.model.value = model
    widget.device.value = "auto"
    widget.start()
    wait(lambda: widget.worker is None, 600, "the overlap model")
    print("overlap widget:", widget.status.value)
    viewer.layers.selection.active = viewer.layers["brightfield overlap"]
    shot(viewer, "overlap_widget.png")
    viewer.close()


def preview_shot(sc) -> None:
    import napari

    from blastoseg.napari._probability_widget import ProbabilityWidget
    from blastoseg.napari.result_layers import apply_display, result_layer_data

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 1000)
    viewer.add_image(sc.planes[0], name="brightfield")
    # the scene's ground truth as amodal label layers (overlapping cells over two or more
    # layers), as a segmentation or the labeling widget gives them
    for data, kw, kind in result_layer_data([sc.instances], "cells"):
        if kind == "labels" and kw["metadata"]["blastoseg"]["role"] == "amodal":
            layer = viewer.add_labels(data, **{k: v for k, v in kw.items()})
            apply_display(layer)
    viewer.add_labels(sc.nuclei, name="nuclei", visible=False)
    widget = ProbabilityWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Probability-map preview", area="right")
    widget.reset_choices()
    keys = list(widget.labels.choices)
    widget.labels.value = "group:cells" if "group:cells" in keys else "layer:cells: amodal 1"
    widget.nuclei.value = "nuclei"
    widget.variant.value = "combined_border_overlap"
    widget.update_now()
    print("preview widget:", widget.status.value)
    viewer.layers.selection.active = viewer.layers["cells: amodal 1"]  # where one would paint
    shot(viewer, "probability_preview.png")
    viewer.close()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model = model_name()
    sc = scene()
    overlap_shot(model, sc)
    preview_shot(sc)


if __name__ == "__main__":
    main()
