"""Re-make docs/images/brightfield_widget.png from the plugin.

Renders a synthetic brightfield scene (:mod:`blastoseg.synth.brightfield`), docks "Segment
brightfield cells" through napari's plugin menu machinery, runs it and photographs the viewer.

The model is the shipped ``brightfield-default`` when it is installed. Without it, the widget
is given a STAND-IN predictor that returns the scene's ground truth (its overlapping cells, its
overlap map slightly blurred as the "overlap probability" and its nuclei): the widget, its
layers and its table look as they will, but the cells are not a model's. The model box then
reads "stand-in (ground truth)". Re-run this script once ``brightfield-default`` exists.

Run under a (virtual) display::

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_brightfield_screenshots.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from screenshot_setup import close_toasts, settle, wait

OUT = Path(__file__).parent / "images"
TMP = Path(tempfile.mkdtemp(prefix="blastoseg-brightfield-shots-"))
SIZE = 512
SEED = 11
#: the look of the model's training scenes (benchmarks/make_brightfield_data.py): cells 90-220
#: px long in a 512 px field; the model is trained for cells of that size
SCENE = {"cell_length_px": [90.0, 220.0], "n_cells": [9.0, 11.0]}
STAND_IN = "stand-in (ground truth)"
os.environ.setdefault("BLASTOSEG_HOME", str(TMP / "home"))  # widget settings go here


def shot(viewer, name: str) -> None:
    import imageio.v3 as iio
    from qtpy.QtCore import Qt

    close_toasts()
    qt = viewer.window._qt_viewer
    docks = [qt.dockLayerList, qt.dockLayerControls]  # room for the long layer names
    viewer.window._qt_window.resizeDocks(docks, [330] * len(docks), Qt.Orientation.Horizontal)
    settle(10)
    viewer.reset_view()
    settle(10)
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(OUT / name, img)
    print("wrote", OUT / name, img.shape)


class StandIn:
    """Returns the scene's ground truth as if predicted (see the module docstring)."""

    device_name = "CPU"
    entry = SimpleNamespace(name=STAND_IN)
    score_threshold = 0.3

    def __init__(self, sc) -> None:
        self.sc = sc

    def iter_predict(self, frames, on_result=None):
        """The predictor contract (predict/base.py): one result per frame, streamed to
        ``on_result`` or returned as a list."""
        from scipy import ndimage

        from blastoseg.instances import FrameInstances

        yield 1, 1
        overlap = np.clip(ndimage.gaussian_filter(self.sc.overlap.astype(np.float32), 1.5),
                          0, 1)
        nuclei = ndimage.gaussian_filter((self.sc.nuclei > 0).astype(np.float32), 1.0)
        n = len(self.sc.instances)
        inst = FrameInstances(masks=self.sc.instances.masks,
                              scores=np.linspace(0.95, 0.6, n).astype(np.float32),
                              occlusion=overlap, meta={"overlap": overlap, "nuclei": nuclei})
        if on_result is not None:
            on_result(0, inst)
            return []
        return [inst]


def main() -> None:
    import napari

    from blastoseg.napari import _ui
    from blastoseg.napari._brightfield_widget import BrightfieldWidget
    from blastoseg.synth.brightfield import BrightfieldConfig, render_brightfield

    OUT.mkdir(exist_ok=True)
    config = BrightfieldConfig.from_dict({**BrightfieldConfig().to_dict(), **SCENE})
    sc = render_brightfield(SEED, config.for_size(SIZE))
    real = "brightfield-default" in _ui.model_names("brightfield")
    if not real:
        print("brightfield-default is not installed: using the ground-truth stand-in "
              "(re-run this script once the shipped model exists)")
        stand_in = StandIn(sc)
        _ui.model_names = lambda *kinds: [STAND_IN]
        BrightfieldWidget._load_predictor = lambda self, model, device, **options: stand_in
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 1000)
    viewer.add_image(sc.planes[0], name="brightfield")
    _, widget = viewer.window.add_plugin_dock_widget("blastoseg", "Segment brightfield cells")
    widget.reset_choices()
    widget.image.value = viewer.layers["brightfield"]
    widget.device.value = "auto"
    widget.start()
    wait(lambda: widget.worker is None, 600, "the brightfield model")
    print("widget:", widget.status.value)
    amodal = [la for la in viewer.layers
              if (la.metadata.get("blastoseg") or {}).get("role") == "amodal"]
    viewer.layers.selection.active = amodal[0]  # where one would correct a cell
    shot(viewer, "brightfield_widget.png")
    viewer.close()


if __name__ == "__main__":
    main()
