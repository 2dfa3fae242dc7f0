"""Reproducer of a segfault of napari 0.9.2 / vispy 0.17 under Mesa's llvmpipe (issue 18
item 6; docs/napari_crash.md). The viewer is driven with plain napari calls only
(``add_image``, ``add_labels``, removing layers): no blastoseg widget, layer metadata,
contour or colormap, and no torch. blastoseg only makes the label arrays (the synthetic
embryo's cells packed into non-overlapping Labels layers, as a segmentation result has them).

    PYTHONFAULTHANDLER=1 xvfb-run -a -s "-screen 0 1280x1024x24" \\
        python benchmarks/napari_crash_reproducer.py 5

Each round adds a noise image and label layers (a frame, a 4-frame time-lapse, empty labels,
a crop, or the frame padded to 1500 px), lets the canvas draw, deletes every layer (all at
once, or one by one from the top or the bottom) and starts again. The seed picks the rounds.
Exit code 139 is the crash.

``--hide-first`` (second argument ``hide``) sets every layer invisible before the layers are
deleted: with it seeds 5 and 7 survive all 15 rounds (docs/napari_crash.md).
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np


def main(seed: int, rounds: int = 15, hide_first: bool = False) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from blastoseg.instances import FrameInstances
    from blastoseg.napari.result_layers import Placement, result_layer_data
    from blastoseg.synth import render_embryo, render_timelapse

    rng = random.Random(seed)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()

    def pump(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.processEvents()
            time.sleep(0.01)

    lapse = render_timelapse(4, seed=2)
    base = render_embryo(4, seed=3)
    for r in range(rounds):
        kind = rng.choice(["frame", "lapse", "empty", "small", "big"])
        if kind == "lapse":
            shape, frames, placement = lapse.images.shape, lapse.frames, Placement(axes="T")
        else:
            masks = base.instances.masks
            if kind == "empty":
                masks = masks[:0]
            elif kind == "small":
                masks = masks[:, 100:400, 100:400]
            elif kind == "big":
                masks = np.pad(masks, ((0, 0), (500, 500), (500, 500)))
            shape, frames, placement = masks.shape[1:], [FrameInstances(masks=masks)], Placement()
        viewer.add_image(np.random.default_rng(r).integers(0, 255, shape, dtype=np.uint8),
                         name=f"image {r}")
        pump(0.2)
        for data, _kwargs, layer_type in result_layer_data(frames, f"image {r}", placement):
            if layer_type == "labels":
                viewer.add_labels(np.asarray(data))
        if kind == "lapse":
            viewer.dims.set_current_step(0, rng.randrange(4))
        viewer.layers.selection.active = viewer.layers[-1]
        pump(0.3)
        how = rng.choice(["all", "one_by_one_top", "one_by_one_bottom"])
        if hide_first:  # the workaround that held: every layer invisible, then deleted
            for layer in list(viewer.layers):
                layer.visible = False
        if how == "all":
            viewer.layers.select_all()
            viewer.layers.remove_selected()
        else:
            order = list(viewer.layers)[::-1] if how.endswith("top") else list(viewer.layers)
            for layer in order:
                viewer.layers.remove(layer)
                pump(0.05)
        pump(0.3)
        print(r, kind, how, flush=True)
    print("survived", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5,
         hide_first=len(sys.argv) > 2 and sys.argv[2] == "hide")
