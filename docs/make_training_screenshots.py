"""Re-make docs/images/napari_training.png and docs/images/napari_models.png from the plugin.

Fine-tunes the bundled ``amodal-default`` on a small synthetic dataset in a throw-away
BLASTOSEG_HOME (two to three minutes on a CPU), photographs the "Fine-tune a model" widget while
the job runs, lets it finish, then photographs "Manage models" with the new model selected.

Run under a (virtual) display::

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_training_screenshots.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from screenshot_setup import close_toasts, wait

OUT = Path(__file__).parent / "images"
HOME = Path(tempfile.mkdtemp(prefix="blastoseg-shots-"))
os.environ["BLASTOSEG_HOME"] = str(HOME / "home")  # before blastoseg reads it


def shot(viewer, name: str) -> None:
    import imageio.v3 as iio
    from qtpy.QtWidgets import QApplication

    for _ in range(20):  # let Qt lay out and matplotlib draw
        QApplication.processEvents()
        time.sleep(0.05)
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(OUT / name, img)
    print("wrote", OUT / name, img.shape)


def main() -> None:
    import napari

    from blastoseg.cli import main as cli
    from blastoseg.napari._models_widget import ModelsWidget
    from blastoseg.napari._train_widget import TrainWidget

    for name, n, seed in (("train", 16, 1), ("val", 4, 2)):
        cli(["synth", "embryos", "--n", str(n), "--seed", str(seed), "--size", "256",
             "--out", str(HOME / name)])
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 1000)
    viewer.open_sample("blastoseg", "embryo")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune a model", area="right")
    widget.train_data.value = str(HOME / "train")
    widget.val_data.value = str(HOME / "val")
    widget.base.value = "amodal-default"
    widget.length.value = 8
    widget.unit.value = "epochs"
    widget.lr.value = "1e-4"
    widget.device.value = "cpu"
    widget.name.value = "amodal-my-lab"
    widget.job_dir.value = str(HOME / "jobs" / "finetune-my-lab")
    widget.start()
    wait(lambda: widget._progress is not None and widget._progress.step >= 18
         and len(widget._progress.validation) >= 4, timeout=900, what="the training job")
    shot(viewer, "napari_training.png")
    wait(lambda: widget._progress.state != "running", timeout=900, what="the training job")
    print("job:", widget._progress.state, widget.status.value)
    viewer.window.remove_dock_widget("all")

    models = ModelsWidget(viewer)
    viewer.window.add_dock_widget(models, name="Manage models", area="right")
    models.select("amodal-my-lab")
    close_toasts()
    shot(viewer, "napari_models.png")
    viewer.close()


if __name__ == "__main__":
    main()
