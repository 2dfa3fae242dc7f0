"""Dock widget "Fine-tune a model": a form around :mod:`blastoseg.train.finetune` and
:mod:`blastoseg.train.monitor` (CLI twins: ``blastoseg train KIND --base ...``,
``blastoseg train JOB_DIR``, ``blastoseg models import``).

Start checks the datasets and the base model, writes a job folder and launches
``python -m blastoseg train JOB_DIR`` as a detached subprocess: training never runs in napari's
process, and closing napari does not stop it. A QTimer polls the job's ``events.jsonl`` once a
second for the live loss / mAP plot, the progress bar and the status line. The last job folder
is remembered, so a new napari session shows a running job again and can resume a stopped one.
"""

from __future__ import annotations

import time
from pathlib import Path

from magicgui.widgets import (
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui

SETTINGS_FILE = "napari_train_widget.json"
DEVICES = ("auto", "cpu", "cuda", "mps")
UNITS = ("epochs", "minutes")
POLL_MS = 1000
LOG_EVERY = 2  # steps between loss points (the first step is always logged)


def load_settings() -> dict:
    return _ui.load_settings(SETTINGS_FILE)


def save_settings(settings: dict) -> None:
    _ui.save_settings(SETTINGS_FILE, settings)


def default_job_dir() -> str:
    from blastoseg.weights import data_home

    return str(data_home() / "jobs" / time.strftime("finetune-%Y%m%d-%H%M%S"))


#: model kinds this widget fine-tunes (the job's kind is the base model's; "oocyte": the
#: synthetic-then-real recipe of S3, a synthetic-trained base fine-tuned on your oocytes)
FINETUNE_KINDS = ("amodal", "brightfield", "overlap", "oocyte")


def _model_names() -> list[str]:
    return _ui.model_names(*FINETUNE_KINDS)


def _base_kind(name: str) -> str:
    from blastoseg.weights import resolve_model

    return resolve_model(name).kind


def _row(label: str, *widgets) -> Container:
    row = Container(layout="horizontal", labels=False, widgets=list(widgets), label=label)
    row.margins = (0, 0, 0, 0)
    return row


CANCELLING = "cancelling: a checkpoint is saved after the current step..."


def _metric_fell(p) -> bool:
    """Whether a finished fine-tune's validation metric is worse than its base model's."""
    key = p.main_metric or "mAP"
    before, after = (p.metrics_before or {}).get(key), (p.metrics or {}).get(key)
    if before is None or after is None:
        return False
    lower_is_better = "loss" in key or key.endswith(("_mae", "_error"))
    return after > before if lower_is_better else after < before


class TrainWidget(_ui.ScrollableDock, Container):
    """Form (data, base model, length, learning rate, augmentation, device, name, job folder),
    Start / Cancel / Resume / Export job / Import model, progress, status and a live plot."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=False, scrollable=True)  # never taller than the screen
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        saved = load_settings()
        self.train_data = LineEdit(value=saved.get("train_data", ""))
        self.train_data.tooltip = ("dataset folder(s) with annotations.json; separate several "
                                   "by commas")
        self.val_data = LineEdit(value=saved.get("val_data", ""))
        self.val_data.tooltip = ("optional: a dataset folder for the validation mAP (the "
                                 "plot's orange line)")
        self.train_browse = PushButton(text="Browse...")
        self.val_browse = PushButton(text="Browse...")
        self.base = ComboBox(label="base model", choices=self._models)
        self.length = SpinBox(min=1, max=1_000_000, value=int(saved.get("length", 20)))
        self.unit = ComboBox(choices=UNITS, value=saved.get("unit") if saved.get("unit") in UNITS
                             else UNITS[0])
        self.lr = LineEdit(label="learning rate", value=str(saved.get("lr", "1e-4")))
        self.aug = FloatSpinBox(label="augmentation", min=0.0, max=3.0, step=0.1,
                                value=float(saved.get("aug_strength", 1.0)))
        self.aug.tooltip = "strength of random flips, rotations, blur, noise and contrast (0 = off)"
        self.replay = SpinBox(label="synthetic frames / epoch", min=0, max=10_000,
                              value=int(saved.get("synth_per_epoch", 8)))
        self.replay.tooltip = ("fresh synthetic embryos mixed into every epoch so the model keeps "
                               "what it learned on them (0 = only your frames)")
        self.device = ComboBox(label="device", choices=DEVICES,
                               value=saved.get("device") if saved.get("device") in DEVICES
                               else "auto")
        self.name = LineEdit(label="new model name", value="")
        self.name.tooltip = ("name of the fine-tuned model in the registry (empty: from the "
                             "job folder)")
        self.job_dir = LineEdit(value=saved.get("job_dir") or default_job_dir())
        self.job_browse = PushButton(text="Browse...")
        self.start_button = PushButton(text="Start")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.cancel_button.tooltip = "stop after the current step; a checkpoint is kept for Resume"
        self.resume_button = PushButton(text="Resume", enabled=False)
        self.resume_button.tooltip = "continue the job in 'job folder' from its last checkpoint"
        self.export_button = PushButton(text="Export job...")
        self.export_button.tooltip = ("copy the job with its data to a folder; run it elsewhere "
                                      "(a GPU server) with: blastoseg train JOB_DIR")
        self.import_button = PushButton(text="Import model...")
        self.import_button.tooltip = "register a .safetensors model or a finished job's model"
        self.progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.progress_text = Label(value="", label="")
        self.status = Label(value="", label="status")
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(200)
        from qtpy.QtWidgets import QSizePolicy

        for text in (self.status, self.progress_text):  # fill the row: left-aligned text
            text.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        form = Container(labels=True)  # extend() (not widgets=) aligns the labels
        form.extend([
            _row("training data", self.train_data, self.train_browse),
            _row("validation data", self.val_data, self.val_browse),
            self.base, _row("train for", self.length, self.unit), self.lr, self.aug, self.replay,
            self.device, self.name, _row("job folder", self.job_dir, self.job_browse)])
        buttons = Container(layout="horizontal", labels=False, widgets=[
            self.start_button, self.cancel_button, self.resume_button])
        more = Container(layout="horizontal", labels=False, widgets=[
            self.export_button, self.import_button])
        state = Container(labels=True)
        state.extend([self.progress, self.progress_text, self.status])
        self._progress = None
        self._popen = None
        self._shown = (0, 0)
        self._announced_done = False
        self._cancelling = False
        self._timer = None
        self.plot_box = Container(labels=False)
        self._make_plot()
        self.extend([form, buttons, more, state, self.plot_box])
        if saved.get("base") in self.base.choices:
            self.base.value = saved["base"]
        self.train_browse.changed.connect(lambda: self._browse_into(self.train_data, True))
        self.val_browse.changed.connect(lambda: self._browse_into(self.val_data, False))
        self.job_browse.changed.connect(self._browse_job)
        self.job_dir.native.editingFinished.connect(self.attach)
        self.start_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.resume_button.changed.connect(self.resume)
        self.export_button.changed.connect(self._export_dialog)
        self.import_button.changed.connect(self._import_dialog)
        _ui.refresh_on_show(self, self.base.reset_choices)
        self.attach()

    # --- choices ------------------------------------------------------------------------------
    def _models(self, _widget=None) -> list[str]:
        return _model_names()

    def _browse_into(self, edit: LineEdit, append: bool) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Choose a dataset folder")
        if folder:
            edit.value = f"{edit.value}, {folder}" if append and edit.value.strip() else folder

    def _browse_job(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(
            self.native, "Choose a job folder (an existing job to follow or resume, or an "
            "empty folder for a new job)")
        if folder:
            self.job_dir.value = folder
            self.attach()

    # --- settings -----------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"train_data": self.train_data.value, "val_data": self.val_data.value,
                "base": self.base.value, "length": int(self.length.value),
                "unit": self.unit.value, "lr": self.lr.value,
                "aug_strength": float(self.aug.value), "device": self.device.value,
                "synth_per_epoch": int(self.replay.value), "job_dir": self.job_dir.value}

    @property
    def job_path(self) -> Path:
        return Path(self.job_dir.value.strip()).expanduser()

    # --- actions ------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the data and the base model, write the job folder, launch the training."""
        from blastoseg.napari.torch_import import import_predictor_safely
        from blastoseg.train.finetune import create_finetune_job
        from blastoseg.train.monitor import launch_job

        try:
            try:
                lr = float(self.lr.value)
            except ValueError:
                raise BlastosegError(f"learning rate {self.lr.value!r} is not a number "
                                     "(e.g. 1e-4)") from None
            if not self.base.value:
                raise BlastosegError("no model to fine-tune: register one first")
            if not self.job_dir.value.strip():
                self.job_dir.value = default_job_dir()
            import_predictor_safely()  # torchvision without triton (see there), before any task
            self.status.value = "checking the datasets..."
            minutes = self.unit.value == "minutes"
            kind = _base_kind(self.base.value)
            hyper = {"log_every": LOG_EVERY}
            if kind == "amodal":  # synthetic replay exists for embryos only
                hyper["synth_per_epoch"] = int(self.replay.value)
            job = create_finetune_job(
                self.train_data.value, self.job_path, base=self.base.value,
                val_data=self.val_data.value or None, kind=kind,
                epochs=None if minutes else int(self.length.value),
                minutes=float(self.length.value) if minutes else None, lr=lr,
                aug_strength=float(self.aug.value), device=self.device.value,
                name=self.name.value.strip() or None,
                hyper=hyper)
            self._popen = launch_job(job)
        except (BlastosegError, OSError) as exc:  # OSError: disk full, no permission
            self._report_error(exc)
            return
        save_settings(self.settings())
        self.attach()

    def cancel(self) -> None:
        from blastoseg.train.monitor import cancel_job

        target = self._popen if self._popen is not None and self._popen.poll() is None \
            else self.job_path
        if cancel_job(target):
            self._cancelling = True  # until the job says it stopped (no "training..." flicker)
            self.status.value = CANCELLING
            self.cancel_button.enabled = False

    def resume(self) -> None:
        from blastoseg.train.monitor import resume_job

        try:
            self._popen = resume_job(self.job_path)
        except (BlastosegError, OSError) as exc:
            self._report_error(exc)
            return
        save_settings(self.settings())
        self.attach()

    def export_to(self, folder: str | Path) -> Path:
        """Export the job to ``folder/<job name>`` (datasets, user base model, checkpoint)."""
        from blastoseg.train.finetune import export_job_folder

        out = export_job_folder(self.job_path, Path(folder) / self.job_path.name)
        self.status.value = (f"exported to {out}: copy it to the GPU machine and run "
                             f"'blastoseg train {out.name}' there, then Import model")
        return out

    def import_from(self, path: str | Path):
        """Register a .safetensors model or a finished job folder's model."""
        from blastoseg.napari.torch_import import import_predictor_safely
        from blastoseg.train.finetune import import_model

        # an import builds the model to check its weights: torch must be imported the
        # guarded way inside napari (see torch_import)
        import_predictor_safely()
        entry = import_model(path)
        self.base.reset_choices()
        self.status.value = f"registered as {entry.name}"
        return entry

    def _export_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(
            self.native, "Export the job into a folder (it is copied with its data)")
        if folder:
            try:
                self.export_to(folder)
            except (BlastosegError, OSError) as exc:
                self._report_error(exc)

    def _import_dialog(self) -> None:
        _ui.import_model_dialog(self)

    def _report_error(self, exc: Exception) -> None:
        _ui.report_error(self.status, exc)

    # --- following the job --------------------------------------------------------------------
    def attach(self) -> None:
        """Follow the job in 'job folder' (called on start, resume, and when it changes)."""
        from qtpy.QtCore import QTimer

        self._progress, self._shown, self._announced_done = None, (-1, -1), False
        if self._timer is None:
            self._timer = QTimer(self.native)
            self._timer.setInterval(POLL_MS)
            self._timer.timeout.connect(self.poll)
        self.poll()
        if self._progress is not None and self._progress.state == "done":
            self._announced_done = True  # finished before we looked: no popup
        save_settings(self.settings())

    def poll(self) -> None:
        from blastoseg.train.monitor import read_progress

        if not self.job_dir.value.strip():
            return
        was = self._progress.state if self._progress is not None else None
        self._progress = p = read_progress(self.job_path, self._progress)
        running = p.state == "running"
        if running and not self._timer.isActive():
            self._timer.start()
        elif not running and self._timer.isActive():
            self._timer.stop()
        has_job = (self.job_path / "job.json").is_file()
        self.start_button.enabled = not running
        self.cancel_button.enabled = running and not self._cancelling
        if not running:
            self._cancelling = False
        self.resume_button.enabled = has_job and p.resumable
        self.export_button.enabled = has_job
        fraction = p.fraction
        self.progress.value = int(1000 * fraction) if fraction is not None else 0
        total = f" / {p.total_steps}" if p.total_steps else ""
        self.progress_text.value = (f"step {p.step}{total}" + (f", {p.eta_text()}" if
                                    p.eta_text() else "")) if p.state != "not started" else ""
        self.status.value = self._status_text(p)
        if (len(p.loss), len(p.validation)) != self._shown:
            self._draw()
        if p.state == "done" and was != "done" and not self._announced_done:
            self._announced_done = True
            self.base.reset_choices()
            from napari.utils.notifications import show_info, show_warning

            (show_warning if _metric_fell(p) else show_info)(self.status.value)

    def _status_text(self, p) -> str:
        key = p.main_metric or "mAP"
        if p.state == "done":
            text = f"done: registered as {p.model}" if p.model else f"done: {p.message}"
            before, after = (p.metrics_before or {}).get(key), (p.metrics or {}).get(key)
            if before is not None and after is not None:
                text += f" ({key} {before:.3f} -> {after:.3f})"
            if _metric_fell(p):
                base = self.base.value or "the base model"
                text += (f". WARNING: validation {key} fell; keep using {base} unless the new "
                         "model looks better on your own frames")
            return text
        if p.state == "running":
            return CANCELLING if self._cancelling else (p.message or "running")
        if p.state == "cancelled":
            return (f"cancelled after step {p.step}, checkpoint saved: click Resume to "
                    "continue")
        return f"{p.state}: {p.message}" if p.message else p.state

    # --- plot ---------------------------------------------------------------------------------
    def _make_plot(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.4), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        self.axes = self.figure.add_subplot(111)
        self.axes_metric = self.axes.twinx()
        self.plot_box.native.layout().addWidget(self.canvas)
        self._draw()

    def _draw(self) -> None:
        ax, ax2 = self.axes, self.axes_metric
        ax.clear()
        ax2.clear()
        p = self._progress
        loss = p.loss if p is not None else []
        val = p.validation if p is not None else []
        self._shown = (len(loss), len(val))
        key = (p.main_metric if p is not None else None) or "mAP"
        if loss:
            ax.plot([s for s, _ in loss], [v for _, v in loss], color="tab:blue", lw=1.2)
        points = [(s, m[key]) for s, m in val if m.get(key) is not None]
        if points:
            ax2.plot([s for s, _ in points], [v for _, v in points], "o-", color="tab:orange",
                     ms=4, lw=1.2)
        if not loss and not points:
            ax.text(0.5, 0.5, "the training loss and validation\nmAP appear here",
                    ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss", color="tab:blue")
        ax2.set_ylabel(f"validation {key}", color="tab:orange")
        if all(0 <= v <= 1 for _, v in points):  # mAP, AP50, accuracies: the whole scale
            ax2.set_ylim(-0.03, 1.03)  # a little room: a point at 0 or 1 is not cut in half
        steps = [st for st, _ in loss] + [st for st, _ in points]
        if steps:  # the base model's point sits at step 0, on the edge: pad both ends
            lo, hi = min(steps), max(steps)
            pad = max(1.0, 0.04 * (hi - lo))
            ax.set_xlim(lo - pad, hi + pad)
        ax2.yaxis.set_label_position("right")
        ax2.yaxis.tick_right()
        ax.grid(alpha=0.3)
        self.canvas.draw_idle()
