"""Re-make docs/images/batch_widget_running.png and batch_widget_done.png from the plugin.

Writes 6 synthetic time-lapses (10 frames of 200 px, one folder per well, hours in the frame
names; the third with a truncated frame), docks "Batch", runs the amodal and timeline tasks
with the shipped ``amodal-default`` on a LocalCluster of 2 worker processes, photographs the
window mid-run (the table filling in) and at the end, after double-clicking the first embryo
(its frames and amodal labels open in the viewer).

Run under a (virtual) display::

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_batch_screenshots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from screenshot_setup import open_viewer, save_shot, throwaway_home, wait

TMP = throwaway_home("blastoseg-batch-shots-")  # bundled models stay
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def main() -> None:
    from batch_scale_out import write_timelapses

    from blastoseg.napari._batch_widget import BatchWidget
    from blastoseg.napari.torch_import import import_predictor_safely

    import_predictor_safely()
    inp = write_timelapses(TMP / "incubator_export", 6, 10, 200)
    bad = sorted((inp / "WELL03").iterdir())[4]
    bad.write_bytes(bad.read_bytes()[:60])
    viewer = open_viewer(1400, 1000)
    widget = BatchWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Batch", area="right")
    widget.input_dir.value = inp
    widget.output_dir.value = TMP / "results"
    for task, box in widget.task_boxes.items():
        box.value = task in ("amodal", "timeline")
    widget.workers.value = 2
    widget.device.value = "cpu"
    widget.start()
    wait(lambda: "2/6" in widget.status.value or widget.worker is None, 1800, "2 embryos")
    save_shot(viewer, "batch_widget_running.png")
    wait(lambda: widget.worker is None, 1800, "the batch")
    print(widget.status.value)
    widget.open_row(0)
    viewer.reset_view()
    save_shot(viewer, "batch_widget_done.png")
    viewer.close()


if __name__ == "__main__":
    main()
