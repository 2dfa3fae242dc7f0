"""The "Count and timeline" widget and its Qt-free job, with stand-in count and amodal
predictors: layers, the plot, the editable events table (the intervals follow) and the CSV
export."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from blastoseg.instances import FrameInstances
from conftest import drive_steps

#: cells per frame of the stand-in time-lapse (a frame's mean grey value is 10 x its count)
COUNTS = [1, 1, 2, 2, 2, 3, 4, 4, 5, 6, 7, 8, 8]
HOURS = [20.0 + 0.5 * k for k in range(len(COUNTS))]


def _stack(counts=COUNTS) -> np.ndarray:
    return np.stack([np.full((24, 24), 10 * c, np.uint8) for c in counts])


def _value(frame) -> float:
    return float(np.asarray(frame, float).mean()) / 10


class FakeCount:
    """A count-kind stand-in: integral = mean grey / 10, a flat density map."""

    kind = "count"
    device_name = "CPU (fake)"

    framing: list = []  # the framing options of every run (all instances)

    def __init__(self, name="fake-count"):
        self.entry = SimpleNamespace(name=name)

    def iter_predict(self, frames, on_result=None, **framing):
        self.framing.append(framing)
        for i, frame in enumerate(frames):
            v = _value(frame)
            h, w = np.shape(frame)[:2]
            on_result(i, SimpleNamespace(
                count=round(v), integral=v, meta={},
                density=np.full((h, w), v / (h * w), np.float32),
                centroids=np.array([[4.0 + 2 * j, 5.0] for j in range(round(v))]).reshape(-1, 2)))
            yield i + 1, len(frames)
        return []


class FakeAmodal(FakeCount):
    """An amodal stand-in: as many instances as the count, one below the threshold."""

    kind = "amodal"
    calibrated_threshold = 0.5

    def iter_predict(self, frames, on_result=None, **framing):
        self.framing.append(framing)
        for i, frame in enumerate(frames):
            n = round(_value(frame))
            masks = np.zeros((n + 1, *np.shape(frame)[:2]), bool)
            for j in range(n + 1):
                masks[j, j, :3] = True
            on_result(i, FrameInstances(masks=masks, scores=np.r_[np.full(n, 0.9), 0.1]))
            yield i + 1, len(frames)
        return []


class Loads(list):
    """The model names loaded, and ``counters``: the (model, density model) of each run."""

    counters: list


def test_job_without_qt_count_and_amodal():
    from blastoseg.napari.timeline_job import (
        CENTROIDS_ROLE,
        DENSITY_ROLE,
        EventTimes,
        layer_hours,
        timeline_job,
    )

    steps, run = drive_steps(timeline_job(_stack(), "T", (0, len(COUNTS)), FakeCount, name="lapse",
                                     hours=HOURS))
    assert steps[0][0] == "loading the model" and steps[-1][1:] == (13, 13)
    assert run.kind == "count" and run.timeline.time_source == "layer metadata"
    assert run.timeline.events["t2"] == (21.0, 2) and run.timeline.events["t8"] == (25.5, 11)
    (dens, dk, dt), (pts, pk, pt) = run.layers
    assert dt == "image" and dens.shape == (13, 24, 24) and dk["name"] == "lapse: count density"
    assert dk["metadata"]["blastoseg"]["role"] == DENSITY_ROLE
    assert pt == "points" and pk["name"] == "lapse: count centroids" and len(pts) == sum(COUNTS)
    assert pk["metadata"]["blastoseg"]["role"] == CENTROIDS_ROLE
    # amodal: counted at the calibrated threshold, no density layer; one frame: no timeline
    _, run = drive_steps(timeline_job(_stack(), "T", (4, 5), FakeAmodal, name="lapse"))
    assert run.timeline is None and run.counts[0].estimate == 2.0 and run.first_frame == 4
    (pts, pk, pt), = run.layers  # on frame 4 of the stack: local frame 0, translated there
    assert pt == "points" and pts[:, 0].tolist() == [0, 0] and pk["translate"][0] == 4
    # the events table's model: a corrected time moves the intervals
    _, run = drive_steps(timeline_job(_stack(), "T", (0, 13), FakeCount, hours=HOURS))
    ev = EventTimes(run.timeline)
    assert ev.intervals["cc2"] == pytest.approx(1.5)
    ev.set_event("t3", 22.2)
    assert ev.intervals["cc2"] == pytest.approx(1.2) and ev.intervals["s2"] == pytest.approx(0.8)
    assert ev.frames["t3"] == 5 and ev.edited == {"t3"} and not ev.out_of_order()
    ev.set_event("t3", 20.5)
    assert ev.out_of_order() == ["t3"]
    # steady framing reaches the predictor for a time-lapse, not for one frame
    FakeCount.framing.clear()
    drive_steps(timeline_job(_stack(), "T", (0, 13), FakeCount, steady=7))
    drive_steps(timeline_job(_stack(), "T", (4, 5), FakeCount, steady=7))
    drive_steps(timeline_job(_stack(), "T", (0, 13), FakeCount))
    assert FakeCount.framing == [{"steady": 7}, {}, {}]
    assert layer_hours({"blastoseg": {"hours": HOURS}}, 13)[1] == "layer metadata"
    assert layer_hours({"hours": HOURS[:3]}, 13)[0] is None


def test_frame_times_of_a_layer_without_qt():
    from blastoseg.napari._timeline_widget import time_status
    from blastoseg.napari.timeline_job import layer_frame_times, timeline_job

    # no times in the metadata: the form's interval (0: none) and the hours at frame 0
    times = layer_frame_times({}, 13, interval_min=30, start_h=20)
    assert times.hours == HOURS and times.note == ""
    assert time_status(times.source, times.note) == \
        "times from the frame interval (30 min, 20 h at frame 0)"
    _, run = drive_steps(timeline_job(_stack(), "T", (0, 13), FakeCount, hours=times.hours,
                                 time_source=times.source))
    assert run.timeline.has_hours and run.timeline.events["t2"] == (21.0, 2)
    # the metadata's times win, and the status says the interval is not used
    own = layer_frame_times({"hours": [h + 1 for h in HOURS]}, 13, interval_min=30, start_h=20)
    assert own.hours[0] == 21.0 and own.source == "layer metadata"
    assert time_status(own.source, own.note) == \
        "times from the layer's metadata; the frame interval is not used"
    meta = layer_frame_times({"hours": HOURS}, 13)
    assert time_status(meta.source, meta.note) == "times from the layer's metadata"
    none = layer_frame_times({}, 13, interval_min=0, start_h=20)  # a start alone: frames
    assert none.hours is None and none.note == "the image layer carries no frame hours"
    assert time_status(none.source, none.note).endswith(
        "events in frame indices; give the frame interval for hours")


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path))
    loads = Loads()

    def load_predictor(name, device="auto", **options):
        loads.append(name)
        return FakeAmodal(name) if "amodal" in name else FakeCount(name)

    def load_counter(model, density_model=None, *, fuse=True, device="auto",
                     count_stacked=None, flips=0):
        import blastoseg.predict.base as base  # a test may patch load_predictor again

        counters.append((model, density_model))
        loads.flips.append(flips)
        options = {} if count_stacked is None else {"count_stacked": count_stacked}
        predictor = base.load_predictor(model, device, **options)
        if flips:
            predictor.flips = flips  # as the real amodal predictor (and fused counter) say
        return predictor

    counters = []
    loads.flips = []
    monkeypatch.setattr("blastoseg.predict.base.load_predictor", load_predictor)
    monkeypatch.setattr("blastoseg.predict.fused_counter.load_counter", load_counter)
    monkeypatch.setattr("blastoseg.napari._ui.model_names",
                        lambda *kinds: ["fake-count", "fake-amodal"] if "amodal" in kinds else
                        ["fake-count"] if kinds == ("count",) else [])
    monkeypatch.setattr("blastoseg.napari._ui.model_kind",
                        lambda model: None if not model else
                        "amodal" if "amodal" in model else "count")
    loads.counters = counters
    return loads


@pytest.mark.gui
def test_widget_runs_edits_and_exports(make_napari_viewer, qtbot, fakes, tmp_path):
    from napari.layers import Image, Points

    from blastoseg.napari._timeline_widget import ROWS, TimelineWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(), name="lapse", metadata={"blastoseg": {"hours": HOURS}})
    widget = TimelineWidget(viewer)
    assert list(widget.model.choices) == ["fake-count", "fake-amodal"]
    assert widget.mode.value == "whole stack"
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert fakes == ["fake-count"]
    assert isinstance(viewer.layers["lapse: count density"], Image)
    assert isinstance(viewer.layers["lapse: count centroids"], Points)
    assert viewer.layers["lapse: count density"].data.shape == (13, 24, 24)
    assert "13 frames, count model: t2, t3, t4, t5, t6, t7, t8 found" in widget.status.value
    shown = [not box.native.isHidden() for box in (widget.plot_box, widget.table_box)]
    assert shown == [True, True] and widget.export_button.enabled

    def cell(name, col=0):
        return widget.table.item(ROWS.index(name), col).text()

    assert (cell("t2"), cell("t2", 1), cell("t3"), cell("cc2")) == ("21.00", "2", "22.50", "1.50")
    # an embryologist corrects t3 in the table: the intervals follow
    widget.table.item(ROWS.index("t3"), 0).setText("22.2")
    assert (cell("t3"), cell("t3", 1), cell("cc2"), cell("s2")) == ("22.20", "5", "1.20", "0.80")
    assert widget.status.value == "t3 set to 22.20"
    widget.table.item(ROWS.index("t4"), 0).setText("soon")
    assert "not a number of hours" in widget.status.value and cell("t4") == "23.00"
    out = widget.export_events(tmp_path / "events.csv")
    rows = out.read_text().splitlines()
    assert rows[0] == "event,hours,frame" and "t3,22.200,5" in rows and "cc2,1.200,3" in rows
    # a click on the plot jumps to that frame
    widget.go_to_frame(7)
    assert viewer.dims.current_step[0] == 7
    # re-running replaces the layers; the amodal model gives no density map
    widget.model.value = "fake-amodal"
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert [la.name for la in viewer.layers] == ["lapse", "lapse: count centroids"]
    assert "amodal model" in widget.status.value and cell("t3") == "22.50"


@pytest.mark.gui
def test_a_frame_interval_gives_hours_to_a_stack_without_times(make_napari_viewer, qtbot,
                                                                fakes):
    from blastoseg.napari._timeline_widget import ROWS, TimelineWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(), name="lapse")
    widget = TimelineWidget(viewer)
    assert widget.interval.value == 0 and not widget.start_h.enabled
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert "events in frame indices; give the frame interval" in widget.status.value
    assert widget.table.horizontalHeaderItem(0).text() == "time (frames)"
    widget.interval.value = 30
    assert widget.start_h.enabled
    widget.start_h.value = 20
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.status.value.endswith("times from the frame interval (30 min, 20 h at frame 0)")
    assert widget.table.horizontalHeaderItem(0).text() == "hours"
    assert widget.table.item(ROWS.index("t2"), 0).text() == "21.00"
    assert widget.settings()["interval_min"] == 30 and widget.settings()["start_h"] == 20
    assert TimelineWidget(viewer).interval.value == 30  # the next session starts there


@pytest.mark.gui
def test_one_frame_counts_without_a_timeline(make_napari_viewer, qtbot, fakes):
    from blastoseg.napari._timeline_widget import TimelineWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack([3])[0], name="frame")
    widget = TimelineWidget(viewer)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.status.value.startswith("frame 0: 3.0 cells (count model)")
    assert "whole stack for a timeline" in widget.status.value
    assert widget.table_box.native.isHidden() and not widget.export_button.enabled
    with pytest.raises(Exception, match="no timeline yet"):
        widget.export_events("x.csv")


@pytest.mark.gui
def test_count_stacked_box_follows_the_card_and_reaches_the_predictor(
        make_napari_viewer, qtbot, fakes, monkeypatch):
    from blastoseg.napari._timeline_widget import TimelineWidget

    options_seen = []
    monkeypatch.setattr("blastoseg.predict.base.load_predictor",
                        lambda name, device="auto", **options: options_seen.append(options)
                        or (FakeAmodal(name) if "amodal" in name else FakeCount(name)))
    # fake-amodal's card has a layer rule, switched off; fake-count has none
    monkeypatch.setattr("blastoseg.napari._ui.card_layer_rule",
                        lambda model: ({"source": "layers"}, False) if "amodal" in model
                        else None)
    viewer = make_napari_viewer()
    viewer.add_image(_stack(), name="lapse", metadata={"blastoseg": {"hours": HOURS}})
    widget = TimelineWidget(viewer)
    widget.model.value = "fake-count"
    assert not widget.stacked.enabled
    widget.model.value = "fake-amodal"
    assert widget.stacked.enabled and widget.stacked.value is False
    widget.stacked.value = True
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert options_seen[-1] == {"count_stacked": True}
    assert widget.settings()["count_stacked"] is True


@pytest.mark.gui
def test_density_model_box_fuses_with_an_amodal_model_only(make_napari_viewer, qtbot, fakes):
    from blastoseg.napari._timeline_widget import NO_DENSITY, TimelineWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(), name="lapse", metadata={"blastoseg": {"hours": HOURS}})
    widget = TimelineWidget(viewer)
    assert list(widget.density_model.choices) == ["fake-count", NO_DENSITY]
    widget.model.value = "fake-count"
    assert not widget.density_model.enabled  # a count model counts alone
    widget.model.value = "fake-amodal"
    assert widget.density_model.enabled and widget.density_model.value == "fake-count"
    for density, expected in (("fake-count", "fake-count"), (NO_DENSITY, None)):
        widget.density_model.value = density
        widget.start()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
        assert fakes.counters[-1] == ("fake-amodal", expected)
    assert "amodal model" in widget.status.value  # the fakes do not fuse: the kind says so
    widget.model.value = "fake-count"
    widget.density_model.value = "fake-count"
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert fakes.counters[-1] == ("fake-count", None)
    assert widget.settings()["density_model"] == "fake-count"


def test_the_status_line_says_which_models_counted():
    from blastoseg.napari._timeline_widget import counted_with
    from blastoseg.napari.timeline_job import TimelineRun

    assert counted_with(TimelineRun([], 0, None, kind="fused")) == "amodal + count models fused"
    assert counted_with(TimelineRun([], 0, None, kind="count")) == "count model"
    assert counted_with(TimelineRun([], 0, None, kind="fused", flips=4)) == (
        "amodal + count models fused, 4 flips")


@pytest.mark.gui
def test_flips_box_reaches_an_amodal_counter_only(make_napari_viewer, qtbot, fakes):
    from blastoseg.napari._timeline_widget import TimelineWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(), name="lapse", metadata={"blastoseg": {"hours": HOURS}})
    widget = TimelineWidget(viewer)
    widget.model.value = "fake-amodal"
    assert widget.flips.enabled and widget.flips.value == 0
    widget.flips.value = 4
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert fakes.flips[-1] == 4
    assert "amodal model, 4 flips:" in widget.status.value
    assert viewer.layers["lapse: count centroids"].metadata["blastoseg"]["flips"] == 4
    assert widget.settings()["flips"] == 4
    widget.model.value = "fake-count"  # a count model has nothing to flip
    assert not widget.flips.enabled
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert fakes.flips[-1] == 0
    assert "flips" not in widget.status.value
    widget.close()
    # the choice is saved with the other settings and comes back in a new widget
    again = TimelineWidget(viewer)
    assert again.flips.value == 4


@pytest.mark.gui
def test_steady_framing_box_reaches_the_counter(make_napari_viewer, qtbot, fakes):
    from blastoseg.napari._timeline_widget import TimelineWidget
    from blastoseg.predict.steady_framing import TIMELINE_STEADY

    viewer = make_napari_viewer()
    viewer.add_image(_stack(), name="lapse", metadata={"blastoseg": {"hours": HOURS}})
    widget = TimelineWidget(viewer)
    assert widget.steady.value == TIMELINE_STEADY
    FakeCount.framing.clear()
    for value in (9, 0):
        widget.steady.value = value
        widget.start()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert FakeCount.framing == [{"steady": 9}, {}]
    assert widget.settings()["steady"] == 0
