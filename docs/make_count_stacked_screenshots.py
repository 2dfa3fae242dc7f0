"""The Segment widget's "count stacked cells (layer map)" box, off and on, on one frame.

Writes docs/images/count_stacked_off.png and count_stacked_on.png (counting_analysis.md).
Run under a (virtual) display:

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_count_stacked_screenshots.py [IMAGE]

IMAGE defaults to a held-out synthetic 7-cell frame (seed 900006, as the amodal benchmark's).
"""

from __future__ import annotations

import sys

from screenshot_setup import close_toasts, open_viewer, save_shot, settle, throwaway_home, wait


def main() -> None:
    throwaway_home("blastoseg-stacked-")
    from blastoseg.napari._segment_framing import SEGMENT_ANYWAY
    from blastoseg.napari.torch_import import import_predictor_safely

    import_predictor_safely()
    if len(sys.argv) > 1:
        from blastoseg.io import read_image

        image, name = read_image(sys.argv[1]), sys.argv[1].rsplit("/", 1)[-1]
    else:
        from blastoseg.synth import EmbryoConfig, render_embryo

        frame = render_embryo(7, seed=900006, config=EmbryoConfig(image_size=(500, 500)))
        image, name = frame.image, "synthetic 7-cell frame"
    viewer = open_viewer()
    viewer.add_image(image, name=name)
    _, seg = viewer.window.add_plugin_dock_widget("blastoseg", "Segment blastomeres")
    seg.reset_choices()
    seg.image.value = viewer.layers[0]
    seg.model.value = "amodal-default"
    seg.device.value = "cpu"
    for on, out in ((False, "count_stacked_off.png"), (True, "count_stacked_on.png")):
        seg.stacked.value = on
        seg.start()
        if seg.worker is None and seg.run_button.text == SEGMENT_ANYWAY:
            seg.start()
        wait(lambda: seg.worker is None, 300, "segmenting")
        # a re-run asks before replacing corrections; there are none here
        settle(30)
        close_toasts()
        save_shot(viewer, out)


if __name__ == "__main__":
    main()
