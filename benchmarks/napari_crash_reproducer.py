"""Reproducer of a segfault of napari 0.9.2 / vispy 0.17 under Mesa's llvmpipe (issue 18
item 6; docs/napari_crash.md), and of blastoseg's workaround.

Cause (found 2026-12): on a layer removal napari's canvas calls vispy's ``context.finish()``
(``VispyCanvas._clean_and_update_scenegraph``), which runs the queued GL commands
(``glDeleteProgram`` of the removed layer, ``glFinish``) outside the paint event, while Qt's
window-compositing context is current, not the canvas's. The next draw can then segfault in
``glDrawArrays``.

    PYTHONFAULTHANDLER=1 xvfb-run -a -s "-screen 0 1280x1024x24" \\
        python benchmarks/napari_crash_reproducer.py 5

Each round adds a noise image and label layers (a frame, a 4-frame time-lapse, empty labels,
a crop, or the frame padded to 1500 px), lets the canvas draw, deletes every layer (all at
once, or one by one from the top or the bottom) and starts again. The seed picks the rounds.
Exit code 139 is the crash. Options:

``--minimal``  plain napari and numpy only (no blastoseg import), the case for an upstream
    report: an image and two empty Labels layers are drawn, then the image and one Labels
    layer are removed; the remaining Labels layer's next draw segfaults.
``--points``   also add the centroid Points layer with its text, as the Segment widget does.
``--hide``     (or a second argument ``hide``) set every layer invisible before deleting them:
    a manual workaround that held.
``--guard``    install blastoseg's workaround (``blastoseg.napari.gl_context.guard_layer_removal``:
    the canvas's GL context made current before napari's removal handlers).
``--rounds N`` rounds per run (15).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np


def _viewer(guard: bool):
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    if guard:
        from blastoseg.napari.gl_context import guard_layer_removal

        guard_layer_removal(viewer)

    def pump(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.processEvents()
            time.sleep(0.01)

    return viewer, pump


def minimal(guard: bool = False) -> None:
    """Plain napari calls only: three layers drawn, two removed, the third drawn again."""
    viewer, pump = _viewer(guard)
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (500, 500), dtype=np.uint8))
    viewer.add_labels(np.zeros((500, 500), np.uint8))
    viewer.add_labels(np.zeros((500, 500), np.uint8))
    pump(0.3)  # the canvas draws all three
    viewer.layers.pop(0)  # the image
    viewer.layers.pop(0)  # one Labels layer
    pump(0.5)  # the remaining Labels layer is drawn: segfault under llvmpipe
    print("survived", flush=True)


def main(seed: int, rounds: int = 15, hide_first: bool = False, guard: bool = False,
         points: bool = False) -> None:
    from blastoseg.instances import FrameInstances
    from blastoseg.napari.result_layers import Placement, result_layer_data
    from blastoseg.synth import render_embryo, render_timelapse

    rng = random.Random(seed)
    viewer, pump = _viewer(guard)

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
            elif layer_type == "points" and points:  # the centroids, with their text
                viewer.add_points(data, **_kwargs)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed", nargs="?", type=int, default=5)
    parser.add_argument("legacy_hide", nargs="?", choices=["hide"], help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hide", action="store_true")
    parser.add_argument("--guard", action="store_true")
    parser.add_argument("--points", action="store_true")
    parser.add_argument("--minimal", action="store_true")
    args = parser.parse_args()
    if args.minimal:
        minimal(guard=args.guard)
    else:
        main(args.seed, rounds=args.rounds, hide_first=args.hide or args.legacy_hide == "hide",
             guard=args.guard, points=args.points)
