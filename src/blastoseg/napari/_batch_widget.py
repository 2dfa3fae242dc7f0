"""Dock widget "Batch": a form and a background worker around
:func:`blastoseg.batch.iter_batch` (CLI twin: ``blastoseg batch``).

Choose the input folder (one stack, frame folder or well folder per embryo), the output
folder, the tasks and the workers (or a dask scheduler's address); Run fills a table of the
embryos as their state changes (pending, running, done, failed), shows the dask dashboard's
link and the ETA; Cancel stops the batch between embryos (the unfinished ones stay pending in
the manifest, and the next run does them). Double-clicking a done embryo opens its input and
its results in the viewer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
)

from blastoseg.batch.tasks import BATCH_TASKS
from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui

SETTINGS_FILE = "batch_widget.json"
COLUMNS = ("embryo", "state", "worker", "seconds", "error")
#: the state shown for an embryo a previous run finished
DONE_BEFORE = "done (earlier run)"


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, s = divmod(int(seconds + 0.5), 60)
    return f", about {minutes} min {s:02d} s left" if minutes else f", about {s} s left"


def parse_models(text: str) -> dict[str, str]:
    """``"count=my-count, amodal=m2"`` -> {"count": "my-count", "amodal": "m2"}."""
    models = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, sep, model = part.partition("=")
        if not sep or not task.strip() or not model.strip():
            raise BlastosegError(f"models: expected TASK=MODEL, comma-separated; got {part!r}")
        models[task.strip()] = model.strip()
    return models


def open_embryo_result(viewer, out_dir: Path, name: str, tasks, input_path: str) -> list:
    """Open what an embryo's tasks wrote (a dataset folder: its frames and instances as
    label layers; the density and overlap maps as images), and its input when no dataset
    brings the frames, in ``viewer``; layer names start with the embryo's. Returns the
    layers added."""
    folder = Path(out_dir) / name
    paths = []
    for task in tasks:
        if task in ("amodal", "brightfield") and (folder / task / "dataset").is_dir():
            paths.append(str(folder / task / "dataset"))
        elif task == "count" and (folder / task / "density.tif").is_file():
            paths.append(str(folder / task / "density.tif"))
        elif task == "overlap":
            paths += [str(p) for p in sorted((folder / task).glob("*.tif"))]
    if not any(p.endswith("dataset") for p in paths):
        paths.insert(0, input_path)
    layers = []
    for path in paths:
        layers += viewer.open(path, plugin="blastoseg")
    short = name.rsplit("/", 1)[-1]
    for layer in layers:  # "WELL04 amodal 1" beside another embryo's layers
        if not layer.name.startswith(short):
            layer.name = f"{short} {layer.name}"
    return layers


class BatchWidget(_ui.ScrollableDock, Container):
    """Form: input, output, tasks, models, workers / scheduler, device; Run / Cancel; the
    embryo table; progress, status and the dashboard link."""

    def __init__(self, napari_viewer) -> None:
        from qtpy.QtWidgets import QSizePolicy

        super().__init__(labels=True, scrollable=True)
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        saved = _ui.load_settings(SETTINGS_FILE)
        self.input_dir = FileEdit(mode="d", label="input folder", value=saved.get("input", ""))
        self.output_dir = FileEdit(mode="d", label="output folder", value=saved.get("out", ""))
        chosen = saved.get("tasks") or ["amodal"]
        self.task_boxes = {t: CheckBox(text=t, value=t in chosen) for t in BATCH_TASKS}
        # rows of two: three a row made the form 366 px wide, wider than the dock napari opens
        boxes = list(self.task_boxes.values())
        self.tasks_row = Container(widgets=[
            Container(widgets=boxes[i:i + 2], layout="horizontal", labels=False)
            for i in range(0, len(boxes), 2)], label="tasks", labels=False)
        self.models = LineEdit(label="models", value=saved.get("models", ""))
        self.models.tooltip = "optional TASK=MODEL, comma-separated (e.g. count=my-count)"
        self.models.native.setPlaceholderText("TASK=MODEL, ... (optional)")
        self.workers = SpinBox(label="local workers", min=1, max=64,
                               value=int(saved.get("workers", 2)))
        self.scheduler = LineEdit(label="scheduler", value=saved.get("scheduler", ""))
        self.scheduler.tooltip = ("an existing dask scheduler (tcp://host:8786); empty: a "
                                  "local cluster of the workers above")
        self.device = ComboBox(label="device", choices=lambda _w: _ui.DEVICES,
                               value=saved.get("device") if saved.get("device") in _ui.DEVICES
                               else "auto")
        self.run_button = PushButton(text="Run batch")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="", label="status")
        self.status.native.setWordWrap(True)
        # a wrapping label asks for a width of its own (365 px for the final summary), which
        # pushed the form out of the dock; any width will do, it wraps to it
        self.status.native.setMinimumWidth(120)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                         QSizePolicy.Policy.Preferred)
        self.dashboard = Label(value="", label="dashboard")
        self.dashboard.native.setOpenExternalLinks(True)
        self.table = Table(value={"data": [], "columns": list(COLUMNS)}, label="embryos")
        self._set_up_table()
        self.extend([self.input_dir, self.output_dir, self.tasks_row, self.models, self.workers,
                     self.scheduler, self.device, self.run_button, self.cancel_button,
                     self.progress, self.status, self.dashboard, self.table])
        _ui.full_width(self.table)
        self.worker = None
        self._stop = threading.Event()
        self._rows: dict[str, int] = {}
        self._workers: dict[str, str] = {}  # dask address -> "w1", "w2", ... (short)
        self._run: dict = {}  # the settings of the run the table shows
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.table.native.cellDoubleClicked.connect(lambda row, _col: self.open_row(row))

    def _set_up_table(self) -> None:
        """The embryo table fits the dock: no row numbers (the names say which), the error
        column takes the width left and wraps (its full text in the cell's tooltip)."""
        from qtpy.QtCore import QTimer

        native = self.table.native
        native.setMinimumHeight(220)
        native.setSortingEnabled(False)  # rows stay where _rows says they are
        # an empty magicgui Table keeps two columns whatever it is given: set them here
        native.setColumnCount(len(COLUMNS))
        native.setHorizontalHeaderLabels(list(COLUMNS))
        native.setEditTriggers(native.EditTrigger.NoEditTriggers)
        native.verticalHeader().setVisible(False)
        native.horizontalHeader().setStretchLastSection(True)
        native.setWordWrap(True)
        # when the error column's width changes, its rows re-wrap (once the layout settles:
        # re-wrapping inside the resize used the old width)
        last = len(COLUMNS) - 1
        native.horizontalHeader().sectionResized.connect(
            lambda col, _old, _new: col == last
            and QTimer.singleShot(0, native.resizeRowsToContents))
        native.setToolTip("double-click a done embryo to open it; hover over an error to read "
                          "all of it")

    def _fit_columns(self) -> None:
        """Size every column but the error to its contents; the error stretches over the
        rest (sizing it to a long message would push it out of the dock)."""
        native = self.table.native
        for col in range(len(COLUMNS) - 1):
            native.resizeColumnToContents(col)
        native.resizeRowsToContents()

    # --- actions ---------------------------------------------------------------------------
    def selected_tasks(self) -> list[str]:
        return [t for t, box in self.task_boxes.items() if box.value]

    def start(self) -> None:
        from napari.qt.threading import create_worker

        from blastoseg.batch import iter_batch
        from blastoseg.napari._job_runner import user_errors_returned

        try:
            models = parse_models(self.models.value)
            tasks = self.selected_tasks()
            if not tasks:
                raise BlastosegError("choose at least one task")
            inp, out = Path(self.input_dir.value), Path(self.output_dir.value)
            if str(self.output_dir.value) in ("", "."):
                raise BlastosegError("choose an output folder")
        except BlastosegError as exc:
            _ui.report_error(self.status, exc)
            return
        scheduler = self.scheduler.value.strip() or None
        _ui.save_settings(SETTINGS_FILE, {
            "input": str(inp), "out": str(out), "tasks": tasks, "models": self.models.value,
            "workers": self.workers.value, "scheduler": scheduler or "",
            "device": self.device.value})
        self._run = {"out": out, "tasks": tasks}
        self._stop.clear()
        self.worker = create_worker(
            user_errors_returned, iter_batch, inp, out, tasks, models=models,
            device=self.device.value, workers=self.workers.value, scheduler=scheduler,
            cancel=self._stop.is_set, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self.on_update)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(lambda exc: setattr(self.status, "value", f"error: {exc}"))
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "starting the cluster..."
        self.worker.start()

    def cancel(self) -> None:
        self._stop.set()
        self.status.value = "cancelling: embryos in flight are dropped and stay pending"

    # --- worker callbacks (GUI thread) -----------------------------------------------------
    def _set_row(self, name: str, **values) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        native = self.table.native
        if name not in self._rows:
            self._rows[name] = native.rowCount()
            native.insertRow(native.rowCount())
            native.setItem(self._rows[name], 0, QTableWidgetItem(name))
        for key, value in values.items():
            item = QTableWidgetItem(str(value))
            if key == "error":
                item.setToolTip(str(value))  # the cell may show only its first lines
            native.setItem(self._rows[name], COLUMNS.index(key), item)
        if "error" in values:
            native.resizeRowToContents(self._rows[name])

    def row_state(self, name: str) -> str:
        item = self.table.native.item(self._rows[name], COLUMNS.index("state"))
        return item.text() if item is not None else ""

    def on_update(self, u) -> None:
        """Show one :class:`~blastoseg.batch.BatchUpdate` (public: tests feed it updates)."""
        if u.event == "start":
            self.table.native.setRowCount(0)
            self._rows.clear()
            self._workers.clear()
            for name, state in u.embryos:
                self._set_row(name, state=DONE_BEFORE if state == "done" else state)
            self._fit_columns()
            if u.dashboard:
                self.dashboard.value = f'<a href="{u.dashboard}">{u.dashboard}</a>'
        elif u.embryo is not None:
            worker = self._workers.setdefault(u.worker, f"w{len(self._workers) + 1}") \
                if u.worker else ""
            values = {"state": u.event, "worker": worker}
            if u.error:
                values["error"] = u.error
            self._set_row(u.embryo, **values)
        self.progress.max = max(u.total, 1)
        self.progress.value = u.done + u.failed
        self.status.value = (f"{u.done + u.failed}/{u.total} embryos ({u.failed} failed, "
                             f"{u.skipped} done earlier){_fmt_eta(u.eta_s)}")

    def _on_returned(self, report) -> None:
        from blastoseg.napari._job_runner import UserError

        if isinstance(report, UserError):
            _ui.report_error(self.status, report.error)
            return
        for name, entry in _manifest_entries(report.out).items():
            if name in self._rows and entry.get("seconds") is not None:
                self._set_row(name, seconds=f"{entry['seconds']:.1f} s")
        self._fit_columns()
        what = "cancelled" if report.cancelled else "finished"
        self.status.value = (f"{what}: {report.done} done, {report.failed} failed, "
                             f"{report.skipped} done earlier, {report.pending} pending; "
                             f"{report.summary.name} and manifest.json in the output folder; "
                             "double-click a done embryo to open it")

    def _on_finished(self) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.worker = None

    def open_row(self, row: int) -> list:
        """Open the embryo of table row ``row`` when it is done; returns the layers added."""
        from blastoseg.napari.torch_import import import_predictor_safely

        names = {r: n for n, r in self._rows.items()}
        name = names.get(row)
        if name is None or not self.row_state(name).startswith("done"):
            self.status.value = "only a done embryo can be opened"
            return []
        import_predictor_safely()  # the reader's result layers may pull in torch
        entry = _manifest_entries(self._run["out"]).get(name, {})
        return open_embryo_result(self.viewer, self._run["out"], name, self._run["tasks"],
                                  entry.get("input", ""))


def _manifest_entries(out: Path) -> dict:
    from blastoseg.batch import Manifest

    try:
        return Manifest.load(out).entries
    except BlastosegError:
        return {}
