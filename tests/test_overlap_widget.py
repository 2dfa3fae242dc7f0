"""The "Overlap map" dock widget and its Qt-free job (blastoseg.napari.overlap_job)."""

import numpy as np
import pytest

from blastoseg.errors import InvalidImageError
from blastoseg.io.frames import image_axes
from blastoseg.napari.overlap_job import overlap_job
from conftest import drive_steps

MODEL = "tiny-overlap"


@pytest.fixture(scope="module")
def bf_image(tiny_overlap):
    from blastoseg.io import read_dataset

    _, data = tiny_overlap
    return read_dataset(data).load_image(0)


@pytest.fixture(scope="module")
def predictor(tiny_overlap):
    from blastoseg.predict.overlap import OverlapPredictor

    return OverlapPredictor(MODEL, device="cpu")


def overlap_axes(shape, rgb=False):
    """The axes the Overlap (and Brightfield) widget reads an image layer with."""
    return image_axes(shape, rgb, focal_planes=False)


def test_axes():
    assert overlap_axes((64, 64)) == "" and overlap_axes((64, 64, 3), rgb=True) == ""
    assert overlap_axes((5, 64, 64)) == "T" and overlap_axes((5, 64, 64, 3), rgb=True) == "T"
    with pytest.raises(InvalidImageError, match="focal planes"):
        overlap_axes((2, 3, 64, 64))
    with pytest.raises(InvalidImageError, match="expected a 2D"):
        overlap_axes((64,))


def test_job_without_qt(predictor, bf_image):
    from blastoseg.napari.result_layers import Placement

    updates, layers = drive_steps(overlap_job(bf_image, "", (0, 1), lambda: predictor, name="bf"))
    assert updates[0][0] == "loading the model"
    assert updates[-1][1] == updates[-1][2] > 0  # all windows done
    names = [kw["name"] for _, kw, _ in layers]
    assert names == [f"bf {h} probability" for h in predictor.heads] + ["bf overlap"]
    for data, kw, kind in layers[:-1]:
        assert kind == "image" and data.dtype == np.float32 and data.shape == bf_image.shape[:2]
        assert kw["blending"] == "additive" and kw["contrast_limits"] == (0.0, 1.0)
        head = kw["metadata"]["blastoseg"]["head"]
        assert kw["visible"] == (head == "overlap")
        assert kw["colormap"] == {"overlap": "magma", "cytoplasm": "green"}.get(head, "gray")
    labels, kw, kind = layers[-1]
    prob = layers[names.index("bf overlap probability")][0]
    assert kind == "labels" and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, prob >= 0.3)  # the card's threshold (0.3)
    assert kw["metadata"]["blastoseg"]["threshold"] == pytest.approx(0.3)
    assert kw["metadata"]["blastoseg"]["model"] == MODEL

    # an explicit threshold; RGB of grey content gives the same maps
    rgb = np.repeat(bf_image[..., None], 3, axis=-1)
    _, again = drive_steps(overlap_job(rgb, "", (0, 1), lambda: predictor, name="bf", rgb=True,
                                  threshold=0.05))
    np.testing.assert_allclose(again[0][0], layers[0][0], atol=1e-5)
    np.testing.assert_array_equal(again[-1][0], again[names.index("bf overlap probability")][0]
                                  >= 0.05)

    # the current frame of a (T, Y, X) stack: (1, Y, X) layers on that frame
    stack = np.stack([bf_image, bf_image[::-1], bf_image[:, ::-1]])
    _, one = drive_steps(overlap_job(stack, "T", (2, 3), lambda: predictor, name="s",
                                placement=Placement(axes="T", scale=(2.0, 1.0, 1.0))))
    assert one[0][0].shape == (1, *bf_image.shape[:2])
    assert tuple(one[0][1]["translate"]) == (4.0, 0.0, 0.0)  # frame 2 at T scale 2
    _, whole = drive_steps(overlap_job(stack, "T", (0, 3), lambda: predictor, name="s"))
    assert whole[0][0].shape == stack.shape
    np.testing.assert_allclose(whole[0][0][2], one[0][0][0], atol=1e-5)

    with pytest.raises(InvalidImageError):
        drive_steps(overlap_job(stack, "TZ", (0, 1), lambda: predictor))
    with pytest.raises(InvalidImageError, match="not in a stack"):
        drive_steps(overlap_job(stack, "T", (2, 5), lambda: predictor))


# --- the widget -------------------------------------------------------------------------------

def _run(widget, qtbot, timeout=60_000):
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _overlap_widget(viewer, **settings):
    from blastoseg.napari._overlap_widget import OverlapWidget

    widget = OverlapWidget(viewer)
    widget.reset_choices()
    widget.image.value = viewer.layers[0]
    widget.model.value = MODEL
    widget.device.value = "cpu"
    if "mode" in settings:
        widget.mode.value = settings["mode"]
    return widget


@pytest.mark.gui
def test_widget_adds_updates_and_rethresholds(make_napari_viewer, qtbot, tiny_overlap,
                                              bf_image):
    from napari.layers import Image, Labels

    viewer = make_napari_viewer()
    viewer.add_image(bf_image, name="bf")
    widget = _overlap_widget(viewer)
    assert widget.threshold.value == pytest.approx(0.3)  # from the model card
    assert not widget.mode.enabled  # a 2D image
    _run(widget, qtbot)
    assert "overlap maps of the image" in widget.status.value, widget.status.value
    assert widget.device_used.value.startswith("CPU")
    probs = [la for la in viewer.layers if isinstance(la, Image) and la.name != "bf"]
    assert [la.name for la in probs] == [f"bf {h} probability"
                                         for h in widget._predictor.heads]
    assert [la.visible for la in probs] == [la.name == "bf overlap probability" for la in probs]
    assert all(la.blending == "additive" for la in probs)
    labels = viewer.layers["bf overlap"]
    assert isinstance(labels, Labels)
    overlap = viewer.layers["bf overlap probability"]
    assert overlap.colormap.name == "magma"
    np.testing.assert_array_equal(labels.data, overlap.data >= 0.3)
    n_layers = len(viewer.layers)

    # the threshold re-thresholds the result without running the model
    widget.threshold.value = 0.05
    np.testing.assert_array_equal(labels.data, overlap.data >= 0.05)
    assert labels.metadata["blastoseg"]["threshold"] == pytest.approx(0.05)

    # re-running updates the same layers (the user's display settings are kept)
    overlap.colormap = "viridis"
    _run(widget, qtbot)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["bf overlap probability"] is overlap
    assert overlap.colormap.name == "viridis"
    # its own outputs are not offered as images to run on
    widget.reset_choices()
    assert [c for c in widget.image.choices] == [viewer.layers["bf"]]

    # settings persist
    from blastoseg.napari._overlap_widget import OverlapWidget

    again = OverlapWidget(viewer)
    assert again.device.value == "cpu" and again.model.value == MODEL
    assert again.threshold.value == pytest.approx(0.05)


@pytest.mark.gui
def test_current_frame_of_a_stack_then_whole_stack(make_napari_viewer, qtbot, tiny_overlap,
                                                   bf_image):
    viewer = make_napari_viewer()
    stack = np.stack([bf_image, bf_image[::-1], bf_image[:, ::-1]])
    viewer.add_image(stack, name="lapse")
    widget = _overlap_widget(viewer, mode="current frame")
    assert widget.mode.enabled
    viewer.dims.set_current_step(0, 1)
    _run(widget, qtbot)
    prob = viewer.layers["lapse overlap probability"]
    assert prob.data.shape == (1, *bf_image.shape) and tuple(prob.translate)[0] == 1
    assert "frame 1" in widget.status.value
    widget.mode.value = "whole stack"
    _run(widget, qtbot)
    assert prob.data.shape == stack.shape and tuple(prob.translate)[0] == 0
    assert viewer.layers["lapse overlap"].data.shape == stack.shape
    # the current frame again: written into that frame of the whole-stack layers
    before = prob.data[0].copy()
    widget.mode.value = "current frame"
    viewer.dims.set_current_step(0, 2)
    _run(widget, qtbot)
    assert prob.data.shape == stack.shape
    np.testing.assert_array_equal(prob.data[0], before)


@pytest.mark.gui
def test_cancel_stops_a_stack_run(make_napari_viewer, qtbot, tiny_overlap):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (60, 96, 96), dtype=np.uint8),
                     name="long")
    widget = _overlap_widget(viewer, mode="whole stack")
    done = []
    widget.start()
    widget.worker.yielded.connect(lambda u: done.append(u[1]))
    qtbot.waitUntil(lambda: any(d > 0 for d in done), timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert max(done) < 60
    assert len(viewer.layers) == 1  # no layers from a cancelled run
    assert "cancelled" in widget.status.value


@pytest.mark.gui
def test_user_errors_become_notifications(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    from blastoseg.napari import _overlap_widget as ow

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path))
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    monkeypatch.setattr("blastoseg.napari._ui.model_names", lambda *kinds: ["no-such-model"])
    viewer = make_napari_viewer()
    widget = ow.OverlapWidget(viewer)
    widget.start()  # no image layer
    assert shown and "no image layer" in shown[-1]
    viewer.add_image(np.zeros((2, 3, 64, 64), np.uint8), name="planes")
    widget.reset_choices()
    widget.image.value = viewer.layers["planes"]
    widget.start()
    assert "focal planes" in shown[-1] and widget.worker is None
    viewer.add_image(np.zeros((64, 64), np.uint8), name="blank")
    widget.reset_choices()
    widget.image.value = viewer.layers["blank"]
    widget.device.value = "cpu"
    _run(widget, qtbot)
    assert "no-such-model" in shown[-1] and len(viewer.layers) == 2
