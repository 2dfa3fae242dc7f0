"""Re-make docs/images/oocyte_widget.png from the plugin.

Renders a synthetic oocyte with inclusions and a vacuole (``blastoseg.synth.oocyte``, seed
720003, 256 x 256, inverted-microscope contrast), docks "Oocyte inclusions", runs the model
given (default ``oocyte-default``; a model name, a .safetensors or a job folder) at its pixel
size and photographs the window: the class Labels layer over the image, the legend and the
measurement table. With ``OOCYTE_IMAGE=FILE`` it photographs that image instead, as
``oocyte_widget_embryo.png`` (made with a real 4-cell embryo crop: the "looks like an embryo"
warning in the status line and the table).

Run under a (virtual) display::

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_oocyte_screenshots.py [MODEL]
"""

from __future__ import annotations

import os
import sys

from screenshot_setup import open_viewer, save_shot, settle, throwaway_home, wait

HOME = os.environ.get("BLASTOSEG_HOME")
throwaway_home("blastoseg-oocyte-shots-")


def main() -> None:
    from blastoseg.napari._oocyte_widget import OocyteWidget
    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte

    model = sys.argv[1] if len(sys.argv) > 1 else "oocyte-default"
    if HOME:  # a registered model of the caller's home (e.g. a benchmark's)
        os.environ["BLASTOSEG_HOME"] = HOME
    oo = render_oocyte(int(os.environ.get("OOCYTE_SEED", 720003)),
                       OocyteConfig(contrast=os.environ.get("OOCYTE_CONTRAST", "inverted"),
                                    vacuole_prob=1.0, inclusion_prob=1.0))
    image_file = os.environ.get("OOCYTE_IMAGE")
    viewer = open_viewer(1400, 1000)
    if image_file:
        from blastoseg.io.images import read_image

        viewer.add_image(read_image(image_file), name="embryo")
    else:
        viewer.add_image(oo.image, name="oocyte")
    widget = OocyteWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Oocyte inclusions", area="right")
    widget.model.value = model if model in widget.model.choices else widget.model.value
    widget.device.value = "cpu"
    widget.pixel_size.value = 0.0 if image_file else float(oo.meta["pixel_size_um"])
    widget.start()
    wait(lambda: widget.worker is None, 600, "the run")
    print(widget.status.value)
    print("truth:", {k: oo.meta[k] for k in ("n_inclusions", "n_vacuoles",
                                              "ooplasm_diameter_um", "zona_thickness_um")})
    viewer.reset_view()  # the whole oocyte in the canvas beside the dock
    settle()
    save_shot(viewer, "oocyte_widget_embryo.png" if image_file else "oocyte_widget.png")
    viewer.close()


if __name__ == "__main__":
    main()
