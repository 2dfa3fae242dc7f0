"""Re-make the screenshots of "Framing the embryo" in docs/napari_guide.md.

Run under a (virtual) display, with a real EmbryoScope frame (not part of the repository; any
frame with the micro-well in view shows the same) and the model to show:

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_framing_screenshots.py \
        ../shared/data/real/blastocyst_embryoscope_focal/train_good_33996213/33996213_0_3AB.jpg

What the user does is done through the same paths: the image is chosen in the widget (the
circle appears), the circle is moved as napari does when it is dragged (the layer's data is
edited and its ``data`` event says "changed"), then Segment is clicked.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import imageio.v3 as iio
import napari
import numpy as np
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).parent
OUT = Path(os.environ.get("BLASTOSEG_SHOTS", HERE / "images"))
MODEL = "amodal-default"
SEGMENT = os.environ.get("BLASTOSEG_SHOTS_SEGMENT") == "1"
#: the embryo circle of the frame above, labelled by eye (benchmarks/data/embryoscope_circles.json)
CIRCLES = HERE.parent / "benchmarks" / "data" / "embryoscope_circles.json"


def settle(n: int = 30) -> None:
    for _ in range(n):
        QApplication.processEvents()


def shot(viewer: napari.Viewer, name: str) -> None:
    settle()
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(OUT / name, img)
    print("wrote", OUT / name, img.shape)


def segment_dock(viewer: napari.Viewer):
    _, seg = viewer.window.add_plugin_dock_widget("blastoseg", "Segment blastomeres")
    seg.reset_choices()
    seg.model.value = MODEL
    seg.device.value = "auto"
    seg.calibrated.value = True
    seg.diameter.value = 0.0
    seg.crops.value = False
    seg.scope.value = "this frame"
    seg.image.value = viewer.layers[0]  # the circle appears
    settle()
    return seg


def run(seg) -> None:
    seg.start()
    if seg.worker is None and seg.run_button.text == "Segment anyway":
        seg.start()
    while seg.worker is not None:
        QApplication.processEvents()


def drag_circle(seg, cx: float, cy: float, r: float) -> None:
    """What napari does when the user drags and resizes the circle with the mouse."""
    from blastoseg.napari.embryo_circle import ellipse_vertices, lead_of

    framing = seg._framing
    layer = framing.layer
    t = framing.frame_index()
    i = list(layer.features["frame"]).index(t)
    layer._data_view.edit(i, ellipse_vertices((cx, cy, r), lead_of(framing.axes, t)))
    layer.events.data(value=layer.data, action="changed", data_indices=(i,),
                      vertex_indices=((0, 1, 2, 3),))
    settle()


def real_frame(path: Path) -> None:
    image = iio.imread(path)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 950)
    viewer.add_image(image, name=path.stem)
    seg = segment_dock(viewer)
    viewer.reset_view()
    shot(viewer, "framing_found.png")
    key = path.name.split("_")[0]
    circle = json.loads(CIRCLES.read_text())["circles"].get(key)
    if circle is not None:
        drag_circle(seg, circle["cx"], circle["cy"], circle["r"])
        # selected, as right after the drag: its handles resize it
        seg._framing.layer.selected_data = {0}
        shot(viewer, "framing_fixed.png")
        if SEGMENT:  # a day-5 blastocyst is not what the blastomere model is for
            run(seg)
            shot(viewer, "framing_segmented.png")
    viewer.close()


def synthetic_off_centre() -> None:
    """The synthetic sample, small and off-centre in a larger frame with a dark corner: the
    localiser's circle on a frame it finds easily."""
    from blastoseg.napari._sample_data import _embryo

    img = _embryo().image[::2, ::2]
    frame = np.full((420, 560), np.median(img[:10, :10]), img.dtype)
    frame[120:370, 250:500] = img
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 950)
    viewer.add_image(frame, name="synthetic embryo, off-centre")
    segment_dock(viewer)
    viewer.reset_view()
    shot(viewer, "framing_synthetic.png")
    viewer.close()


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    if len(sys.argv) > 1:
        MODEL = sys.argv[2] if len(sys.argv) > 2 else MODEL
        real_frame(Path(sys.argv[1]))
    synthetic_off_centre()
