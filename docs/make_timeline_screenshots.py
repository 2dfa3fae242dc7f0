"""Re-make docs/images/timeline_widget.png from the plugin.

Opens the sample time-lapse (``blastoseg.napari._sample_data.sample_timelapse``: 32 frames,
1 -> 8 cells, hours in its metadata), docks "Count and timeline", runs it on the whole stack
with the model given (default: ``count-default`` when installed, else ``amodal-default``),
jumps to the frame after t4 through the plot and photographs the window.

Run under a (virtual) display::

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_timeline_screenshots.py [MODEL]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "images"
TMP = Path(tempfile.mkdtemp(prefix="blastoseg-timeline-shots-"))
os.environ["BLASTOSEG_HOME"] = str(TMP / "home")  # widget settings go here; bundled models stay


def wait(until, timeout: float, what: str) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.time() + timeout
    while not until() and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.05)
    if not until():
        raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from blastoseg.commands.timeline import default_count_model
    from blastoseg.napari._sample_data import sample_timelapse
    from blastoseg.napari._timeline_widget import TimelineWidget

    model = sys.argv[1] if len(sys.argv) > 1 else default_count_model()
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
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
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    OUT.mkdir(exist_ok=True)
    shot = viewer.screenshot(path=str(OUT / "timeline_widget.png"), canvas_only=False)
    print("wrote", OUT / "timeline_widget.png", shot.shape)
    viewer.close()


if __name__ == "__main__":
    main()
