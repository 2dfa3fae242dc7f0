"""Dock widget "Generate synthetic embryos": a form and a background worker around
``blastoseg.synth`` (CLI twin: ``blastoseg synth embryos``).

Rendering runs in a napari thread worker that yields after every frame, so the viewer stays
responsive, the progress bar moves and Cancel stops between frames.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui
from blastoseg.napari.layer_conversion import instances_to_label_layers
from blastoseg.synth import EmbryoConfig, iter_timelapse, render_blastocyst, render_embryo

MODES = ("single frame", "time-lapse")
STAGES = ("cleavage", "blastocyst")
#: label value of each blastocyst component in the "blastocyst components" layer
COMPONENT_LABELS = {"zona": 1, "trophectoderm": 2, "blastocoel": 3, "inner_cell_mass": 4}


def component_labels(components: dict[str, np.ndarray]) -> np.ndarray:
    """One label image of a blastocyst's components (later ones drawn over earlier ones)."""
    first = next(iter(components.values()))
    out = np.zeros(first.shape, np.uint8)
    for name, value in COMPONENT_LABELS.items():
        out[components[name]] = value
    return out


def synth_job(
    mode: str, n_cells: int, n_frames: int, max_cells: int, seed: int, size: int,
    stage: str = "cleavage",
) -> Generator[tuple[int, int], None, tuple[np.ndarray, list, dict]]:
    """Render frames, yielding (done, total) after each; returns (images, instances, meta).

    A blastocyst is a single frame; its ``meta["components"]`` is a label image of its parts.
    """
    config = EmbryoConfig(image_size=(size, size))
    if stage == "blastocyst":
        if mode != MODES[0]:
            raise BlastosegError("time-lapses show cleaving embryos; choose mode 'single "
                                 "frame' for a blastocyst")
        yield 0, 1
        frame = render_blastocyst(seed=seed, config=config)
        yield 1, 1
        return frame.image, [frame.instances], {**frame.meta,
                                                "components": component_labels(frame.components)}
    if mode == MODES[0]:
        yield 0, 1
        frame = render_embryo(n_cells, seed=seed, config=config)
        yield 1, 1
        return frame.image, [frame.instances], frame.meta
    images, frames = [], []
    meta: dict = {}
    for t, frame in enumerate(iter_timelapse(n_frames, seed=seed, config=config, max_cells=max_cells)):
        images.append(frame.image)
        frames.append(frame.instances)
        meta = frame.meta
        yield t + 1, n_frames
    return np.stack(images), frames, meta


class SynthEmbryoWidget(_ui.ScrollableDock, Container):
    """Form: mode, cells, frames, seed, size, ground truth; Generate / Cancel; progress."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True, scrollable=True)  # never taller than the screen
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        self.mode = ComboBox(choices=MODES, value=MODES[1], label="mode")
        self.stage = ComboBox(choices=STAGES, value=STAGES[0], label="stage")
        self.n_cells = SpinBox(value=4, min=1, max=16, label="cells (single frame)")
        self.n_frames = SpinBox(value=32, min=2, max=1000, label="frames (time-lapse)")
        self.max_cells = SpinBox(value=8, min=2, max=16, label="cells at the end")
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self.size = SpinBox(value=500, min=64, max=2048, step=4, label="size (px)")
        self.ground_truth = CheckBox(value=True, text="add ground-truth amodal outlines")
        self.run_button = PushButton(text="Generate")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="", label="status")
        # the label starts empty; let it grow and wrap when a result is reported
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(180)
        self.extend([
            self.mode, self.stage, self.n_cells, self.n_frames, self.max_cells, self.seed, self.size,
            self.ground_truth, self.run_button, self.cancel_button, self.progress, self.status,
        ])
        self.worker = None
        self._layers: list = []  # layers of the previous run, replaced by the next one
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.stage.changed.connect(self._stage_changed)

    def _stage_changed(self, *_args) -> None:
        # a blastocyst is drawn as one frame: choosing it picks that mode instead of letting
        # Generate fail on the time-lapse default
        if self.stage.value == "blastocyst" and self.mode.value != MODES[0]:
            self.mode.value = MODES[0]
            self.status.value = "blastocysts are single frames: mode set to 'single frame'"

    # --- actions ---------------------------------------------------------------------------
    def start(self) -> None:
        from napari.qt.threading import create_worker

        if self.stage.value == "blastocyst" and self.mode.value != MODES[0]:
            _ui.report_error(self.status, BlastosegError(
                "time-lapses show cleaving embryos; choose mode 'single frame' for a blastocyst"))
            return
        args = (self.mode.value, self.n_cells.value, self.n_frames.value, self.max_cells.value,
                self.seed.value, self.size.value, self.stage.value)
        self.worker = create_worker(synth_job, *args, _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "rendering..."
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "cancelled"

    # --- worker callbacks (GUI thread) --------------------------------------------------
    def _on_progress(self, done_total: tuple[int, int]) -> None:
        done, total = done_total
        self.progress.max = total
        self.progress.value = done

    def _on_done(self, result: tuple[np.ndarray, list, dict]) -> None:
        images, frames, meta = result
        metadata = {"blastoseg": {"synthetic": True, "seed": self.seed.value}}
        if meta.get("pixel_size_um") is not None:
            metadata["pixel_size_um"] = meta["pixel_size_um"]
        for layer in self._layers:  # re-running replaces, it does not pile up
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._layers = [self.viewer.add_image(images, name="synthetic embryo", metadata=metadata)]
        if self.ground_truth.value:
            single = images.ndim == 2
            for k, labels in enumerate(instances_to_label_layers(frames)):
                layer = self.viewer.add_labels(
                    labels[0] if single else labels,
                    name=f"ground truth amodal {k + 1}",
                    metadata={"blastoseg": {"role": "amodal", "labels_are_track_ids": True}},
                )
                layer.contour = 2
                self._layers.append(layer)
            if meta.get("components") is not None:
                layer = self.viewer.add_labels(meta["components"], name="blastocyst components")
                layer.contour = 2
                self._layers.append(layer)
        if images.ndim == 3:
            self.viewer.dims.axis_labels = ("t", "y", "x")
        counts = [len(f) for f in frames]
        if meta.get("stage") == "blastocyst":
            self.status.value = f"{meta['blastocyst_stage']} blastocyst (cells not counted)"
            return
        self.status.value = (
            f"{len(frames)} frames, {counts[0]} to {counts[-1]} cells" if len(frames) > 1
            else f"{counts[0]} cells"
        )

    def _on_error(self, exc: Exception) -> None:
        if not isinstance(exc, BlastosegError):
            raise exc  # a bug: napari shows it with its traceback
        _ui.report_error(self.status, exc)

    def _on_finished(self) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.worker = None
