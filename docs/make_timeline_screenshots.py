"""Re-make docs/images/timeline_widget.png from the plugin.

Opens the sample time-lapse (``blastoseg.napari._sample_data.sample_timelapse``: 32 frames,
1 -> 8 cells, hours in its metadata), docks "Count and timeline", runs it on the whole stack
with the model given (default: ``amodal-default``, fused with the density model the widget
proposes: ``count-default`` when installed),
jumps to the frame after t4 through the plot and photographs the window.

Run under a (virtual) display::

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_timeline_screenshots.py [MODEL]
"""

from __future__ import annotations

import sys

from screenshot_setup import open_viewer, save_shot, settle, throwaway_home, wait

throwaway_home("blastoseg-timeline-shots-")  # bundled models stay


def main() -> None:
    from blastoseg.napari._sample_data import sample_timelapse
    from blastoseg.napari._timeline_widget import TimelineWidget

    model = sys.argv[1] if len(sys.argv) > 1 else "amodal-default"
    viewer = open_viewer(1400, 1000)
    (data, kwargs, _), = sample_timelapse()
    viewer.add_image(data, **kwargs)
    widget = TimelineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Count and timeline", area="right")
    widget.model.value = model
    widget.device.value = "cpu"
    widget.mode.value = "whole stack"
    widget.start()
    wait(lambda: widget.worker is None, 900, "the run")
    print(widget.status.value)
    t4 = widget.events.frames.get("t4") if widget.events else None
    widget.go_to_frame(t4 if t4 is not None else 0)
    settle()
    save_shot(viewer, "timeline_widget.png")
    viewer.close()


if __name__ == "__main__":
    main()
