"""Dock widget "Count and timeline": a :class:`~.model_run_widget.ModelRunWidget` that counts
the blastomeres of every frame with an "amodal" model's instances fused with a "count"
model's density map (:mod:`blastoseg.predict.fused_counter`; the "density model" box, on by
default when ``count-default`` is installed), or with one of them alone, and decodes a
time-lapse into its division times (CLI twin: ``blastoseg timeline``).

The work runs in a napari thread worker over
:func:`~blastoseg.napari.timeline_job.timeline_job` (Qt-free) with progress and Cancel. The
result gives a density-map image layer (count models), a centroids Points layer, a plot of
the counts with the decoded stage line and the events (a click on it jumps to that frame),
and an events table: editing a division time updates the intervals, and the table exports to
CSV (the ``events.csv`` columns of the CLI). The events are in hours when the layer's metadata
has frame times or the form has a frame interval (the metadata wins; the status says which),
else in frames.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, SpinBox

from blastoseg.errors import BlastosegError
from blastoseg.measure.timeline import EVENTS, INTERVALS
from blastoseg.napari import _ui
from blastoseg.napari.model_run_widget import ModelRun, ModelRunWidget
from blastoseg.napari.result_layers import Placement
from blastoseg.napari.timeline_job import (
    CENTROIDS_ROLE,
    COUNT_KINDS,
    DENSITY_ROLE,
    EventTimes,
    TimelineRun,
    layer_frame_times,
    timeline_job,
)
from blastoseg.predict.steady_framing import TIMELINE_STEADY

ROWS = list(EVENTS) + list(INTERVALS)
#: the density-model choice that counts with the amodal model alone
NO_DENSITY = "none"


def time_status(time_source: str, note: str) -> str:
    """Where a run's frame times came from, for the status line."""
    if time_source == "frame index":
        return (f"no frame times ({note}): events in frame indices; give the frame interval "
                "for hours")
    if time_source == "layer metadata":
        return "times from the layer's metadata" + ("; the frame interval is not used"
                                                     if note else "")
    return f"times from the {time_source}"


def counted_with(run: TimelineRun) -> str:
    """Which model counted, for the status line: "count model", "amodal model" or "amodal +
    count models fused", and the amodal model's test-time flips if any."""
    who = "amodal + count models fused" if run.kind == "fused" else f"{run.kind} model"
    return who + (f", {run.flips} flips" if run.flips else "")


def _installed_kinds() -> list[str]:
    from blastoseg.kinds import KINDS

    return [k for k in COUNT_KINDS if k in KINDS]


class TimelineWidget(ModelRunWidget):
    """Form: image, model (count or amodal), device, frames, the frame interval and the hours
    at frame 0 (for stacks without frame times); Run / Cancel; progress; the count plot; the
    events table and its CSV export."""

    kind = "amodal"  # the fallback kind of the base's messages; the model list has both
    settings_file = "napari_timeline_widget.json"
    progress_title = "Count and timeline"
    image_hint = "an embryo time-lapse"
    default_mode = _ui.MODES[1]
    model_tooltip = ("an 'amodal' model (instances at the calibrated threshold; "
                     "amodal-default), fused with the density model below, or a 'count' model "
                     "alone (density map)")
    _cancel_message = "cancelling (stops after the current frame)..."

    def _add_fields(self, saved: dict) -> None:
        from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget

        # for stacks without frame times: the events in hours post insemination, not frames
        self.interval = FloatSpinBox(label="frame interval (min)", min=0.0, max=1440.0,
                                     step=1.0, value=float(saved.get("interval_min", 0.0)))
        self.interval.tooltip = ("minutes between frames, for a stack whose metadata has no "
                                 "frame times (its own times win); 0: events in frames")
        self.interval.native.setSpecialValueText("none")  # shown at 0
        self.start_h = FloatSpinBox(label="hours at frame 0", min=0.0, max=1000.0, step=0.5,
                                    value=float(saved.get("start_h", 0.0)))
        self.start_h.tooltip = ("hours post insemination at the stack's first frame (with the "
                                "frame interval)")
        self.steady = SpinBox(label="steady framing (frames, 0: off)", min=0, max=99,
                              value=int(saved.get("steady", TIMELINE_STEADY)))
        self.steady.tooltip = (
            "the embryo hardly moves between frames: frame each one with the median of the "
            "embryo circles found in this many frames around it, so that one badly framed "
            "frame does not change its count (docs/localisation.md); 0: each frame alone")
        self.stacked = _ui.count_stacked_box()
        self.flips = _ui.flips_box(saved.get("flips", 0), (
            "count with the amodal model on each frame's mirror images too, merged: closer "
            "counts on our 16 real crops (fused 56 -> 69 % exact) but a worse timeline on "
            "synthetic time-lapses (stage accuracy 76 -> 69 %), at about 3x or 6x the time "
            "(docs/benchmarks.md#morphokinetic-timeline-issue-15); amodal models only"))
        self.density_model = ComboBox(label="density model", choices=self._density_choices)
        self.density_model.tooltip = (
            "a 'count' model fused with the amodal model's instances: where the density map "
            "finds a cell no instance counted, a lower-scored instance there is counted, and "
            "counted instances it does not support are dropped (docs/models/count.md); "
            "'none' counts with the amodal model alone")
        self.plot_box = Container(labels=False)
        self.plot_box.visible = False
        self.table = QTableWidget(len(ROWS), 2)
        self.table.setHorizontalHeaderLabels(["hours", "frame"])
        self.table.setVerticalHeaderLabels(ROWS)
        self.table.setMinimumHeight(260)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setEditTriggers(QAbstractItemView.DoubleClicked
                                   | QAbstractItemView.EditKeyPressed
                                   | QAbstractItemView.AnyKeyPressed)
        self.table.setToolTip("division times: double-click an event's hours to correct it; "
                              "the intervals (cc2 = t3 - t2, s2 = t4 - t3, cc3 = t5 - t3, "
                              "s3 = t8 - t5) follow")
        self.table_box = Container(labels=False)
        self.table_box.native.layout().addWidget(self.table)
        self.table_box.visible = False
        self.export_button = PushButton(text="Export events CSV...", enabled=False)
        self.events: EventTimes | None = None
        self.run_result: TimelineRun | None = None
        self._plot = None
        self._filling = False

    def _form_rows(self) -> list:
        return [self.image, self.model, self.density_model, self.device, self.mode,
                self.stacked, self.flips, self.steady, self.interval,
                self.start_h, self._run_row(),
                self.progress, self.device_used, self.status, self.plot_box, self.table_box,
                self.export_button]

    def _connect(self, saved: dict) -> None:
        from blastoseg.napari._timeline_plot import TimelinePlot

        self._plot = TimelinePlot(self.plot_box, self.go_to_frame)
        self.plot_box.visible = False
        self.table.itemChanged.connect(self._table_edited)
        self.export_button.changed.connect(self._ask_export)
        self.viewer.dims.events.current_step.connect(self._mark_frame)
        self.interval.changed.connect(self._interval_changed)
        self._interval_changed()
        self.model.changed.connect(self._model_changed)
        _ui.follow_layer_rule(self.stacked, self.model.value, saved.get("count_stacked"))
        if saved.get("density_model") in self.density_model.choices:
            self.density_model.value = saved["density_model"]
        self._model_changed(follow=False)

    def _density_choices(self, _widget=None) -> list[str]:
        return [*_ui.model_names("count"), NO_DENSITY]

    def _model_changed(self, *_args, follow: bool = True) -> None:
        """A density model is fused with, and flips apply to, an amodal model only."""
        if follow:
            _ui.follow_layer_rule(self.stacked, self.model.value)
        amodal = _ui.model_kind(self.model.value) == "amodal"
        self.density_model.enabled = self.flips.enabled = amodal

    def _interval_changed(self, *_args) -> None:
        self.start_h.enabled = self.interval.value > 0  # a start time alone places no frame

    def _extra_settings(self) -> dict:
        return {"interval_min": self.interval.value, "start_h": self.start_h.value,
                "steady": int(self.steady.value),
                "count_stacked": bool(self.stacked.value), "flips": int(self.flips.value),
                "density_model": self.density_model.value}

    def _predictor_options(self) -> dict:
        density = self.density_model.value if self.density_model.enabled else NO_DENSITY
        flips = int(self.flips.value) if self.flips.enabled else 0
        return {**_ui.count_stacked_option(self.stacked), **({"flips": flips} if flips else {}),
                "density_model": None if density in (None, NO_DENSITY) else density}

    # --- the models: both counting kinds --------------------------------------------------------
    def _models(self, _widget=None) -> list[str]:
        return _ui.model_names(*_installed_kinds())

    def _load_predictor(self, model: str, device: str, *, density_model: str | None = None,
                        count_stacked: bool | None = None, flips: int = 0):
        from blastoseg.predict.fused_counter import load_counter

        return load_counter(model, density_model, fuse=density_model is not None,
                            device=device, count_stacked=count_stacked, flips=flips)

    def _import_predictor(self) -> None:
        from blastoseg.kinds import get_kind
        from blastoseg.napari.torch_import import import_predictor_safely

        import_predictor_safely()
        for kind in _installed_kinds():
            try:
                get_kind(kind).predictor_class()
            except ImportError:  # a kind whose module is not there yet cannot be chosen anyway
                pass

    # --- running --------------------------------------------------------------------------------
    def _make_run(self, layer, axes: str, frame_range: tuple[int, int],
                  get_predictor: Callable[[], object]) -> ModelRun:
        n_frames = int(layer.data.shape[0]) if axes == "T" else 1
        times = layer_frame_times(dict(layer.metadata), n_frames, self.interval.value,
                                  self.start_h.value)
        placement = Placement(axes=axes, first_frame=frame_range[0], scale=tuple(layer.scale),
                              translate=tuple(layer.translate))
        self._pending = {"group": layer.name, "layer": layer, "axes": axes,
                         "time_note": times.note}
        return ModelRun(timeline_job, [layer.data, axes, frame_range, get_predictor], {
            "name": layer.name, "rgb": bool(layer.rgb), "placement": placement,
            "hours": times.hours, "time_source": times.source,
            "steady": int(self.steady.value)},
            total=frame_range[1] - frame_range[0])

    def _ours(self, group: str) -> list:
        return [la for la in self.viewer.layers
                if _ui.layer_tag(la).get("group") == group
                and _ui.layer_tag(la).get("role") in (DENSITY_ROLE, CENTROIDS_ROLE)]

    def _show_result(self, result: TimelineRun) -> None:
        pending = self._pending
        self._replace_layers(self._ours(pending["group"]), result.layers)
        self.run_result = result
        counts = [c.estimate for c in result.counts]
        frames = result.first_frame + np.arange(len(counts))
        tl = result.timeline
        if tl is None:
            self.events = None
            self.table_box.visible = False
            self.export_button.enabled = False
            self._plot.draw(frames, np.asarray(counts), None, {}, result.first_frame)
            self.plot_box.visible = len(counts) > 1
            self.status.value = (f"frame {result.first_frame}: {counts[0]:.1f} cells "
                                 f"({counted_with(result)}); run on the whole stack for a "
                                 "timeline")
            return
        self.events = EventTimes(tl, result.first_frame)
        self._plot.draw(frames, np.asarray(counts), tl.stages,
                        {k: self.events.frames[k] for k in EVENTS}, self._current_frame())
        self._fill_table()
        self.table_box.visible = True
        self.export_button.enabled = True
        reached = [k for k in EVENTS if self.events.hours[k] is not None]
        times = time_status(tl.time_source, pending["time_note"])
        self.status.value = (f"{len(counts)} frames, {counted_with(result)}: "
                             f"{', '.join(reached) or 'no division'} found; {times}")

    # --- events table ---------------------------------------------------------------------------
    def _fill_table(self) -> None:
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QTableWidgetItem

        ev = self.events
        if ev is None:
            return
        values = {**{k: (ev.hours[k], ev.frames[k]) for k in EVENTS},
                  **{k: (v, None) for k, v in ev.intervals.items()}}
        self._filling = True
        try:
            for r, name in enumerate(ROWS):
                h, f = values[name]
                for c, text in enumerate(("" if h is None else f"{h:.2f}",
                                          "" if f is None else str(f))):
                    item = QTableWidgetItem(text)
                    editable = c == 0 and name in EVENTS
                    flags = item.flags() | Qt.ItemIsEditable if editable else \
                        item.flags() & ~Qt.ItemIsEditable
                    item.setFlags(flags)
                    if name in ev.edited and c == 0:
                        item.setToolTip("corrected by hand")
                        font = item.font()
                        font.setBold(True)
                        item.setFont(font)
                    self.table.setItem(r, c, item)
            unit = "hours" if ev.has_hours else "time (frames)"
            self.table.setHorizontalHeaderLabels([unit, "frame"])
        finally:
            self._filling = False

    def _table_edited(self, item) -> None:
        if self._filling or self.events is None or item.column() != 0:
            return
        name = ROWS[item.row()]
        if name not in EVENTS:
            return
        text = item.text().strip().replace(",", ".")
        try:
            self.set_event(name, None if text == "" else float(text))
        except (ValueError, BlastosegError):
            self.status.value = f"{name}: '{item.text()}' is not a number of hours"
            self._fill_table()

    def set_event(self, name: str, hours: float | None) -> None:
        """Correct one division time (as an edit in the table does); the intervals, the
        table and the plot follow."""
        self.events.set_event(name, hours)
        self._fill_table()
        result = self.run_result
        if result is not None and result.timeline is not None:
            frames = result.first_frame + np.arange(len(result.counts))
            self._plot.draw(frames, np.array([c.estimate for c in result.counts]),
                            result.timeline.stages, {k: self.events.frames[k] for k in EVENTS},
                            self._current_frame())
        late = self.events.out_of_order()
        self.status.value = (f"{name} set to " + ("-" if hours is None else f"{hours:.2f}")
                             + (f"; warning: {', '.join(late)} now before the event it follows"
                                if late else ""))

    def export_events(self, path: str | Path) -> Path:
        """Write the (corrected) events and intervals as ``events.csv`` columns."""
        from blastoseg.results.timeline import write_events_csv

        if self.events is None:
            raise BlastosegError("no timeline yet: run on a time-lapse first")
        ev = self.events
        out = write_events_csv(path, ev.hours, ev.frames, ev.has_hours)
        self.status.value = f"events written to {out}"
        return out

    def _ask_export(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Export events", "events.csv",
                                              "CSV (*.csv)")
        if path:
            try:
                self.export_events(path)
            except (OSError, BlastosegError) as exc:
                self._report_error(exc)

    # --- frames ---------------------------------------------------------------------------------
    def _time_layer(self):
        layer = self._pending.get("layer") if self._pending else None
        return layer if layer is not None and layer in self.viewer.layers else None

    def _current_frame(self) -> int:
        layer = self._time_layer()
        if layer is None or self._pending.get("axes") != "T":
            return 0
        return _ui.layer_index(self.viewer, layer, 0)

    def go_to_frame(self, frame: int) -> None:
        """Show frame ``frame`` of the image that was run (a click on the plot)."""
        layer = self._time_layer()
        if layer is None or self._pending.get("axes") != "T":
            return
        axis = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_point(axis, layer.translate[0] + frame * layer.scale[0])

    def _mark_frame(self, *_args) -> None:
        if self._plot is not None and self.run_result is not None:
            self._plot.mark(self._current_frame())
