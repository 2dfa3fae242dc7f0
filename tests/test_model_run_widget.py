"""ModelRunWidget, the base of the Segment, Overlap and Brightfield widgets, through a tiny
subclass whose job thresholds the image: Run -> progress -> layers, Cancel, user errors in the
status line without a traceback, the model list from the kinds table."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from blastoseg.errors import InvalidImageError


class FakePredictor:
    device_name = "CPU (fake)"

    def __init__(self, model: str, **options) -> None:
        self.entry = SimpleNamespace(name=model)
        self.options = options


def threshold_job(data, axes, frame_range, get_predictor, *, delay: float = 0.0):
    """Yields (message, done, total) per frame; returns the frames above their mean as labels
    (a blank frame is a user error)."""
    t0, t1 = frame_range
    frames = [np.asarray(data)] if axes == "" else [np.asarray(data[t]) for t in range(t0, t1)]
    yield "loading the model", 0, len(frames)
    predictor = get_predictor()
    out = []
    for i, frame in enumerate(frames):
        time.sleep(delay)
        if not frame.any():
            raise InvalidImageError(f"frame {t0 + i} is blank")
        out.append((frame > frame.mean()).astype(np.uint8))
        yield f"thresholding on {predictor.device_name}", i + 1, len(frames)
    return np.stack(out) if axes else out[0]


def _widget_class():
    from blastoseg.napari.model_run_widget import ModelRun, ModelRunWidget

    class ThresholdWidget(ModelRunWidget):
        """A subclass as small as one can be: a kind, a job, how its result becomes a layer."""

        kind = "overlap"
        settings_file = "napari_threshold_test.json"
        progress_title = "Thresholding"
        image_hint = "a test image"
        delay = 0.0

        def _predictor_options(self) -> dict:
            return {"window": 64}

        def _make_run(self, layer, axes, frame_range, get_predictor):
            self._pending = {"group": layer.name, "first": frame_range[0]}
            return ModelRun(threshold_job, [layer.data, axes, frame_range, get_predictor],
                            {"delay": self.delay}, total=frame_range[1] - frame_range[0])

        def _replaced_by_run(self, group: str) -> list:
            return [la for la in self.viewer.layers if la.name == f"{group}: mask"]

        def _show_result(self, result) -> None:
            group = self._pending["group"]
            added = self._replace_layers(self._replaced_by_run(group), [(result, {
                "name": f"{group}: mask",
                "metadata": {"blastoseg": {"group": group, "role": "amodal"}}}, "labels")])
            self._select_first(added, "amodal")
            self.status.value = f"{int(np.asarray(result).sum())} pixels"

    return ThresholdWidget


@pytest.fixture
def loads(monkeypatch, tmp_path):
    """Every load_predictor call of the widget, with a fake predictor; two fake models."""
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path))
    calls = []

    def load_predictor(name, device="auto", *, kind=None, **options):
        calls.append({"name": name, "device": device, "kind": kind, **options})
        return FakePredictor(name, **options)

    monkeypatch.setattr("blastoseg.predict.base.load_predictor", load_predictor)
    monkeypatch.setattr("blastoseg.napari._ui.model_names", lambda *kinds: ["fake-a", "fake-b"])
    return calls


def _run(widget, qtbot, timeout=30_000):
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


@pytest.mark.gui
def test_run_shows_progress_and_adds_layers(make_napari_viewer, qtbot, loads):
    from napari.layers import Labels

    from blastoseg.napari import _ui

    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).integers(1, 200, (4, 24, 24)).astype(np.uint8)
    viewer.add_image(stack, name="lapse")
    widget = _widget_class()(viewer)
    assert [w.label for w in widget] == ["image", "model", "device", "frames", "", "progress",
                                        "device used", "status"]
    assert widget.image.value is viewer.layers["lapse"] and widget.mode.enabled
    widget.model.value, widget.device.value, widget.mode.value = "fake-b", "cpu", "whole stack"
    updates = []
    widget.start()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    widget.worker.yielded.connect(updates.append)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert updates[-1] == ("thresholding on CPU (fake)", 4, 4)
    assert widget.progress.value == widget.progress.max == 4
    assert widget.device_used.value == "CPU (fake)" and widget.run_button.enabled
    assert loads == [{"name": "fake-b", "device": "cpu", "kind": "overlap", "window": 64}]
    mask = viewer.layers["lapse: mask"]
    assert isinstance(mask, Labels) and mask.data.shape == stack.shape
    assert viewer.layers.selection.active is mask
    above = stack > stack.mean(axis=(1, 2), keepdims=True)
    assert widget.status.value == f"{int(above.sum())} pixels"
    # its own output is not offered as an image; re-running replaces the layer
    widget.reset_choices()
    assert list(widget.image.choices) == [viewer.layers["lapse"]]
    _run(widget, qtbot)
    assert [la.name for la in viewer.layers] == ["lapse", "lapse: mask"]
    # the settings come back in a new widget
    assert _ui.load_settings("napari_threshold_test.json") == {
        "model": "fake-b", "device": "cpu", "mode": "whole stack"}
    again = _widget_class()(viewer)
    assert (again.model.value, again.device.value, again.mode.value) == (
        "fake-b", "cpu", "whole stack")


@pytest.mark.gui
def test_cancel_stops_between_frames(make_napari_viewer, qtbot, loads):
    viewer = make_napari_viewer()
    viewer.add_image(np.full((60, 16, 16), 7, np.uint8), name="long")
    widget = _widget_class()(viewer)
    widget.delay = 0.05
    widget.mode.value = "whole stack"
    done = []
    widget.start()
    widget.worker.yielded.connect(lambda u: done.append(u[1]))
    qtbot.waitUntil(lambda: any(d > 0 for d in done), timeout=30_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert max(done) < 60 and len(viewer.layers) == 1  # no layers from a cancelled run
    assert "cancelled" in widget.status.value and widget.run_button.enabled


@pytest.mark.gui
def test_user_errors_show_in_the_status_line_without_a_traceback(make_napari_viewer, qtbot,
                                                                  loads, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    widget = _widget_class()(viewer)
    widget.start()  # no image: told what to open, nothing runs
    assert widget.worker is None and not loads
    assert shown[-1] == "no image layer: open a test image and choose it in the 'image' box"
    assert widget.status.value == f"error: {shown[-1]}"

    viewer.add_image(np.zeros((2, 3, 16, 16), np.uint8), name="planes")
    widget.reset_choices()
    widget.image.value = viewer.layers["planes"]
    assert not widget.mode.enabled
    widget.start()  # overlap models take no focal planes: refused before any run
    assert widget.worker is None and "focal planes" in shown[-1] and not loads

    viewer.add_image(np.zeros((16, 16), np.uint8), name="blank")
    widget.reset_choices()
    widget.image.value = viewer.layers["blank"]
    errored = []
    widget.start()  # the job raises a user error: shown, not a crash
    widget.worker.errored.connect(errored.append)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert not errored and shown[-1] == "frame 0 is blank"
    assert widget.status.value == "error: frame 0 is blank"
    assert [la.name for la in viewer.layers] == ["planes", "blank"]

    monkeypatch.setattr("blastoseg.napari._ui.model_names", lambda *kinds: [])
    widget.model.reset_choices()
    widget.start()
    assert "no overlap model is installed" in shown[-1]


def test_model_lists_come_from_the_kinds_table(monkeypatch):
    from blastoseg import kinds
    from blastoseg.napari import _ui
    from blastoseg.weights import registry

    def entry(name, kind):
        return SimpleNamespace(name=name, kind=kind)

    found = {"amodal": [entry("mine", "amodal"), entry("amodal-default", "amodal")],
             "brightfield": [entry("bf-2", "brightfield"), entry("bf-1", "brightfield"),
                             entry("brightfield-default", "brightfield")]}
    monkeypatch.setattr(registry, "list_models", lambda kind=None: found.get(kind, []))
    # each kind's shipped default first, the others in registry order, kinds in the order asked
    assert _ui.model_names("brightfield") == ["brightfield-default", "bf-2", "bf-1"]
    assert _ui.model_names("amodal", "brightfield") == [
        "amodal-default", "mine", "brightfield-default", "bf-2", "bf-1"]
    with pytest.raises(kinds.UnknownKindError):
        _ui.model_names("no-such-kind")
    assert kinds.get_kind("brightfield").default_model == "brightfield-default"

    def broken(kind=None):
        raise OSError("unreadable model folder")

    monkeypatch.setattr(registry, "list_models", broken)
    assert _ui.model_names("amodal") == []  # a broken folder never breaks a form


@pytest.mark.gui
def test_the_model_widgets_declare_their_kind(make_napari_viewer, monkeypatch, tmp_path):
    """Each model-run widget lists the models of its kind (the one the kinds table names it
    the widget of) and reads image axes with focal planes only where its kind takes them."""
    from importlib import resources

    import yaml

    from blastoseg import kinds
    from blastoseg.kinds import import_ref

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path))
    asked = []
    monkeypatch.setattr("blastoseg.napari._ui.model_names",
                        lambda *k: asked.append(k) or [f"{k[0]}-model"])
    manifest = yaml.safe_load(resources.files("blastoseg").joinpath("napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    viewer = make_napari_viewer()
    with_widgets = [n for n in kinds.runnable_kinds() if kinds.get_kind(n).widget]
    # the localiser has no widget of its own: the Segment widget's framing circle shows it
    assert set(kinds.runnable_kinds()) - set(with_widgets) == {"localiser"}
    for name in with_widgets:
        cls = import_ref(commands[kinds.get_kind(name).widget])
        widget = cls(viewer)
        if widget.kind == name:  # a widget of one kind lists that kind's models only
            assert widget.model.choices == (f"{name}-model",)
            assert widget.focal_planes == (name == "amodal")
        else:  # the count kind's widget (Count and timeline) also counts with amodal models
            assert f"{name}-model" in widget.model.choices
    assert asked


@pytest.mark.gui
def test_the_image_box_takes_the_only_or_active_image(make_napari_viewer):
    """Issue 18 item 4: the image box started empty even with one image open."""
    import numpy as np

    from blastoseg.napari._label_widget import LabelWidget
    from blastoseg.napari._segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)  # opened before any image
    assert seg.image.value is None
    first = viewer.add_image(np.zeros((64, 64), np.uint8), name="first")
    seg.reset_choices()  # what napari does when a layer is added
    assert seg.image.value is first
    assert LabelWidget(viewer).image.value is first
    second = viewer.add_image(np.ones((64, 64), np.uint8), name="second")
    viewer.layers.selection.active = second
    assert SegmentWidget(viewer).image.value is second  # two images: the active one
    seg.reset_choices()
    assert seg.image.value is first  # a choice already made is kept


@pytest.mark.gui
def test_closing_the_dock_stops_the_job(make_napari_viewer, qtbot, loads):
    """Issue 18 item 5: closing the Segment dock mid-run did not stop the job; its layers
    appeared later."""
    viewer = make_napari_viewer()
    viewer.add_image(np.full((40, 16, 16), 7, np.uint8), name="long")
    widget = _widget_class()(viewer)
    viewer.window.add_dock_widget(widget, name="threshold")
    widget.delay = 0.05
    widget.mode.value = "whole stack"
    done = []
    widget.start()
    worker = widget.worker
    worker.yielded.connect(lambda u: done.append(u[1]))
    returned = []
    worker.returned.connect(returned.append)
    qtbot.waitUntil(lambda: any(d > 0 for d in done), timeout=30_000)
    viewer.window.remove_dock_widget(widget.native)  # what the dock's close button does
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    qtbot.wait(200)
    assert max(done) < 40 and not returned  # stopped, not run to its end
    assert [la.name for la in viewer.layers] == ["long"]
    assert "closed" in widget.status.value

    # a job that finishes in the moment its dock closes adds nothing either
    widget.delay = 0.0
    viewer.window.add_dock_widget(widget, name="threshold")
    widget.start()
    widget._on_close(destroyed=False)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert [la.name for la in viewer.layers] == ["long"]
