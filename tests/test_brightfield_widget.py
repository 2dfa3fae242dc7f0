"""The "Segment brightfield cells" dock widget and its Qt-free job (blastoseg.napari.brightfield_job).

Which predictions: a tiny SparseSEU-Net trained for two steps cannot learn to separate
overlapping cells, so the tests that check what the widget SHOWS use a stub predictor that
returns a synthetic brightfield scene's ground-truth cells (known to overlap) with the scene's
overlap and nuclei maps: the widget's job is to display, measure, let the user edit and export
them. A real tiny model, trained through ``blastoseg train brightfield`` under a temporary
BLASTOSEG_HOME, runs through the job and the widget to check the plumbing (model list, card
threshold, maps, layers).
"""

from __future__ import annotations

import csv
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.napari.brightfield_job import (
    brightfield_job,
    brightfield_measurements,
    export_brightfield,
)
from conftest import drive_steps

#: a SparseSEU-Net small enough to train two steps in seconds on a CPU
TINY_SPARSE = {"seunet": {"base_width": 4, "depth": 2, "se_reduction": 2},
               "num_instances": 8, "branch_width": 16, "kernel_dim": 16, "branch_convs": 2,
               "branch_stride": 2}


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    """A temporary BLASTOSEG_HOME for the module (widget settings, the tiny model)."""
    tmp = tmp_path_factory.mktemp("bf_widget")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLASTOSEG_HOME", str(tmp / "home"))
    yield tmp
    mp.undo()


@pytest.fixture(scope="module")
def scene():
    from blastoseg.synth.brightfield import BrightfieldConfig, render_brightfield

    sc = render_brightfield(3, BrightfieldConfig().for_size(96))
    assert sc.instances.overlap_map().any()  # the scene has overlapping cells
    return sc


class StubPredictor:
    """Returns the scene's ground truth (scores 0.95 .. 0.5) whatever the image; applies the
    score threshold like the real predictor; two "network passes" per frame."""

    device_name = "CPU (stub)"
    entry = SimpleNamespace(name="stub-bf")

    def __init__(self, sc, delay: float = 0.0) -> None:
        self.sc, self.delay, self.score_threshold = sc, delay, 0.3
        self.scores = np.linspace(0.95, 0.5, len(sc.instances)).astype(np.float32)

    def iter_predict(self, frames, on_result=None):
        assert len(frames) == 1 and frames[0].shape[:2] == self.sc.shape  # a frame at a time
        for done in (1, 2):
            time.sleep(self.delay)
            yield done, 2
        keep = self.scores >= self.score_threshold
        overlap = self.sc.overlap.astype(np.float32)
        inst = FrameInstances(masks=self.sc.instances.masks[keep], scores=self.scores[keep],
                              occlusion=overlap, meta={"overlap": overlap,
                                                       "nuclei": (self.sc.nuclei > 0) * 0.9})
        if on_result is not None:
            on_result(0, inst)
            return []
        return [inst]


# --- no Qt -------------------------------------------------------------------------------------

def test_measurements_on_hand_made_squares():
    masks = np.zeros((6, 64, 64), bool)
    masks[0, 10:30, 10:30] = True  # a: 400 px
    masks[1, 20:40, 25:45] = True  # b: 400 px, overlaps a in 10 x 5 = 50 px
    masks[2, 25:35, 12:28] = True  # d: 160 px, overlaps a (80 px) and b (30 px)
    masks[3, 50:55, 50:55] = True  # c: 25 px, alone
    masks[4, 50:55, 55:60] = True  # e: touches c, shares no pixel
    inst = FrameInstances(masks=masks)  # masks[5] is empty: no row
    rows = brightfield_measurements([FrameInstances.empty((64, 64)), inst], first_frame=3)
    got = {r["cell"]: (r["frame"], r["area_px"], r["overlap_px"], r["neighbours"])
           for r in rows}
    # a's overlap is the UNION of its parts under b (50) and d (80), which share 15 px
    assert got == {1: (4, 400, 115, 2), 2: (4, 400, 65, 2), 3: (4, 160, 95, 2),
                   4: (4, 25, 0, 0), 5: (4, 25, 0, 0)}
    assert rows[0]["overlap_pct"] == pytest.approx(100 * 115 / 400)
    # two squares: the overlap px exact on both
    two = brightfield_measurements([FrameInstances(masks=masks[:2], track_ids=[6, 2])])
    assert [(r["cell"], r["overlap_px"], r["overlap_pct"]) for r in two] == [
        (7, 50, 12.5), (3, 50, 12.5)]  # cell = track id + 1, the label napari shows


def test_job_without_qt(scene):
    from blastoseg.napari.result_layers import Placement, instances_from_layers

    stub = StubPredictor(scene)
    image = scene.planes[0]
    updates, out = drive_steps(brightfield_job(image, "", (0, 1), lambda: stub, name="bf"))
    assert updates[0][0] == "loading the model" and updates[-1][1] == updates[-1][2] == 2
    layers = out["layers"]
    names = [kw["name"] for _, kw, _ in layers]
    roles = [kw["metadata"]["blastoseg"]["role"] for _, kw, _ in layers]
    assert names[:2] == ["bf nuclei probability", "bf overlap probability"]
    assert roles[2:-1] == ["amodal"] * (len(layers) - 3) and roles[-1] == "centroids"
    assert len(layers) - 3 >= 2  # overlapping cells need two or more Labels layers
    prob, kw, kind = layers[1]
    assert kind == "image" and prob.dtype == np.float32 and kw["visible"]
    np.testing.assert_array_equal(prob, scene.overlap)
    assert not layers[0][1]["visible"] and layers[0][0].max() == pytest.approx(0.9)
    tag = layers[2][1]["metadata"]["blastoseg"]
    assert tag["category"] == "cell" and tag["model"] == "stub-bf" and tag["group"] == "bf"

    class FakeLayer:
        def __init__(self, d, kw):
            self.data, self.name, self.metadata = d, kw["name"], kw["metadata"]

    _, back, _ = instances_from_layers([FakeLayer(d, kw) for d, kw, k in layers
                                        if kw["metadata"]["blastoseg"]["role"] == "amodal"])
    np.testing.assert_array_equal(back[0].masks, scene.instances.masks)
    assert back[0].overlap_map().any()
    assert out["rows"] == brightfield_measurements([scene.instances])
    assert out["counts"] == {0: len(scene.instances)}

    # a stack: the current frame sits on its frame; the whole stack gives (T, Y, X) layers
    stack = np.stack([image, image[::-1], image])
    _, one = drive_steps(brightfield_job(stack, "T", (2, 3), lambda: stub, name="s",
                                    placement=Placement(axes="T", scale=(2.0, 1.0, 1.0))))
    assert one["layers"][0][0].shape == (1, 96, 96)
    assert tuple(one["layers"][0][1]["translate"]) == (4.0, 0.0, 0.0)
    assert {r["frame"] for r in one["rows"]} == {2} and one["counts"] == {2: 10}
    stub.score_threshold = 0.7
    updates, whole = drive_steps(brightfield_job(stack, "T", (0, 3), lambda: stub, name="s"))
    assert [u[1:] for u in updates[2:]] == [(d, 6) for d in range(1, 7)]
    assert whole["layers"][2][0].shape == stack.shape
    assert whole["counts"] == {t: int((stub.scores >= 0.7).sum()) for t in range(3)}
    with pytest.raises(InvalidImageError, match="not axes"):
        drive_steps(brightfield_job(stack[None], "TZ", (0, 1), lambda: stub))
    with pytest.raises(InvalidImageError, match="not in a stack"):
        drive_steps(brightfield_job(stack, "T", (2, 5), lambda: stub))


@pytest.fixture(scope="module")
def tiny_bf(home):
    """A tiny brightfield model "tiny-bf" trained two steps through the CLI."""
    import blastoseg.train.brightfield_task  # noqa: F401 - ours: never skipped
    from blastoseg.cli import main

    data = home / "bf"
    assert main(["synth", "brightfield", "--n", "2", "--size", "96", "--seed", "4",
                 "--out", str(data)]) == 0
    cfg = home / "bf.json"
    cfg.write_text(json.dumps({
        "model": TINY_SPARSE, "probability": {"variant": "combined_border_overlap"},
        "data": {"crop": 64, "repeats": 1},
        "hyper": {"max_steps": 2, "batch_size": 1, "lr": 0.01, "val_frames": 1}}))
    assert main(["train", "brightfield", "--data", str(data), "--val", str(data), "--out",
                 str(home / "job"), "--config", str(cfg), "--name", "tiny-bf",
                 "--quiet"]) == 0
    return data


def test_job_with_a_tiny_trained_model(tiny_bf):
    from blastoseg.io import read_dataset
    from blastoseg.predict.brightfield import BrightfieldPredictor

    image = read_dataset(tiny_bf).load_image(0)
    predictor = BrightfieldPredictor("tiny-bf", device="cpu", score_threshold=0.0)
    _, out = drive_steps(brightfield_job(image, "", (0, 1), lambda: predictor, name="bf"))
    by_name = {kw["name"]: (d, kw) for d, kw, _ in out["layers"]}
    for key in ("nuclei", "overlap"):
        d, _ = by_name[f"bf {key} probability"]
        assert d.shape == image.shape and d.dtype == np.float32 and 0 <= d.min() <= d.max() <= 1
    assert "bf: amodal 1" in by_name and "bf: centroids" in by_name
    assert by_name["bf: amodal 1"][1]["metadata"]["blastoseg"]["model"] == "tiny-bf"
    assert out["counts"] == {0: len(out["rows"])}


# --- the widget ---------------------------------------------------------------------------------

def _run(widget, qtbot, timeout=60_000):
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _use_stub(monkeypatch, stub) -> None:
    """The widget lists only "stub-bf" and loads ``stub`` (its predictor options applied)."""
    from blastoseg.napari._brightfield_widget import BrightfieldWidget

    def load(self, model, device, **options):
        for name, value in options.items():  # score_threshold, as the real one takes it
            setattr(stub, name, value)
        return stub

    monkeypatch.setattr("blastoseg.napari._ui.model_names", lambda *kinds: ["stub-bf"])
    monkeypatch.setattr(BrightfieldWidget, "_load_predictor", load)


@pytest.fixture
def stubbed(monkeypatch, scene):
    stub = StubPredictor(scene)
    _use_stub(monkeypatch, stub)
    return stub


def _widget(viewer, **settings):
    from blastoseg.napari._brightfield_widget import BrightfieldWidget

    widget = BrightfieldWidget(viewer)
    widget.reset_choices()
    widget.image.value = viewer.layers[0]
    for k, v in settings.items():
        getattr(widget, k).value = v
    return widget


@pytest.mark.gui
def test_widget_shows_overlapping_cells_measures_edits_and_exports(
        make_napari_viewer, qtbot, stubbed, scene, tmp_path):
    from napari.layers import Labels

    from blastoseg.io import read_dataset
    from blastoseg.napari.result_layers import amodal_groups, instances_from_layers

    viewer = make_napari_viewer()
    viewer.add_image(scene.planes[0], name="bf")
    widget = _widget(viewer)
    assert widget.threshold.value == pytest.approx(0.3) and not widget.mode.enabled
    _run(widget, qtbot)
    amodal = amodal_groups(viewer.layers)["bf"]
    assert len(amodal) >= 2 and all(isinstance(la, Labels) and la.contour > 0 for la in amodal)
    _, frames, _ = instances_from_layers(amodal)
    assert len(frames[0]) == 10 and frames[0].overlap_map().any()  # overlapping instances
    assert viewer.layers["bf overlap probability"].visible
    assert not viewer.layers["bf nuclei probability"].visible
    assert "bf: centroids" in viewer.layers and "bf: occlusion" not in viewer.layers
    assert widget.table.native.rowCount() == 10 and widget.device_used.value == "CPU (stub)"
    assert widget.summary.value.startswith("10 cells")
    assert [r["cell"] for r in widget.rows] == list(range(1, 11))
    widget.reset_choices()
    assert list(widget.image.choices) == [viewer.layers["bf"]]  # its outputs are not offered

    # re-running replaces the layers; the threshold reaches the predictor
    widget.threshold.value = 0.7
    _run(widget, qtbot)
    names = [la.name for la in viewer.layers]
    assert len(names) == len(set(names)) and not any("[" in n for n in names)
    assert len(amodal_groups(viewer.layers)) == 1
    assert stubbed.score_threshold == pytest.approx(0.7)
    assert len(widget.rows) == int((stubbed.scores >= 0.7).sum())

    # deleting a cell with napari's tools updates the table
    layer = amodal_groups(viewer.layers)["bf"][0]
    data = np.asarray(layer.data).copy()
    gone = int(data[data > 0][0])
    data[data == gone] = 0
    layer.data = data
    qtbot.waitUntil(lambda: gone not in [r["cell"] for r in widget.rows], timeout=5_000)
    assert widget.table.native.rowCount() == len(widget.rows)

    # export: a dataset of "cell" instances that reads back, with the measurements
    out = widget.export(tmp_path / "export")
    ds = read_dataset(tmp_path / "export")
    assert len(ds) == 1 and ds.categories == {1: "cell"}
    assert len(ds.instances(0)) == len(widget.rows)
    np.testing.assert_array_equal(ds.load_image(0), scene.planes[0])
    with open(out["cells"], newline="") as f:
        cells = list(csv.DictReader(f))
    # cells.csv is the CLI's table: the label value napari shows is its "instance"
    assert [int(r["instance"]) for r in cells] == [r["cell"] for r in widget.rows]
    assert [int(r["overlap_px"]) for r in cells] == [r["overlap_px"] for r in widget.rows]
    assert (tmp_path / "export" / "overlap_probability.tif").is_file()
    from blastoseg.errors import DatasetFormatError

    with pytest.raises(DatasetFormatError, match="exists already"):
        widget.export(tmp_path / "export")
    widget.export(tmp_path / "export", overwrite=True)

    from blastoseg.napari._brightfield_widget import BrightfieldWidget

    again = BrightfieldWidget(viewer)  # the settings persist
    assert again.threshold.value == pytest.approx(0.7) and again.model.value == "stub-bf"


@pytest.mark.gui
def test_cancel_stops_a_stack_run(make_napari_viewer, qtbot, monkeypatch, scene):
    slow = StubPredictor(scene, delay=0.05)
    _use_stub(monkeypatch, slow)
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([scene.planes[0]] * 40), name="lapse")
    widget = _widget(viewer, mode="whole stack")
    assert widget.mode.enabled
    done = []
    widget.start()
    widget.worker.yielded.connect(lambda u: done.append(u[1]))
    qtbot.waitUntil(lambda: any(d > 0 for d in done), timeout=30_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert max(done) < 80 and len(viewer.layers) == 1
    assert "cancelled" in widget.status.value


@pytest.mark.gui
def test_widget_with_the_tiny_model_and_user_errors(make_napari_viewer, qtbot, monkeypatch,
                                                    tiny_bf):
    from blastoseg.io import read_dataset
    from blastoseg.napari._brightfield_widget import BrightfieldWidget

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    widget = BrightfieldWidget(viewer)
    assert "tiny-bf" in widget.model.choices
    widget.start()  # no image layer
    assert shown and "no image layer" in shown[-1]
    viewer.add_image(np.zeros((2, 3, 64, 64), np.uint8), name="planes")
    widget.reset_choices()
    widget.image.value = viewer.layers["planes"]
    widget.start()
    assert "focal planes" in shown[-1] and widget.worker is None
    viewer.add_image(read_dataset(tiny_bf).load_image(0), name="bf")
    widget.reset_choices()
    widget.image.value = viewer.layers["bf"]
    widget.model.value = "tiny-bf"
    assert widget.threshold.value == pytest.approx(0.3)  # from the model card
    widget.device.value = "cpu"
    widget.threshold.value = 0.0
    _run(widget, qtbot)
    assert widget.status.value.startswith("done"), widget.status.value
    assert viewer.layers["bf overlap probability"].data.shape == (96, 96)
    assert "bf: amodal 1" in viewer.layers and widget.device_used.value.startswith("CPU")
    monkeypatch.setattr("blastoseg.napari._ui.model_names", lambda *kinds: ["no-such-model"])
    widget.reset_choices()
    widget.model.value = "no-such-model"
    _run(widget, qtbot)
    assert "no-such-model" in shown[-1]


def test_export_refuses_without_layers_or_image(tmp_path):
    with pytest.raises(InvalidImageError, match="segment the cells first"):
        export_brightfield(tmp_path, SimpleNamespace(name="x"), [])
    with pytest.raises(InvalidImageError, match="image layer"):
        export_brightfield(tmp_path, None, [object()])


# --- labeling with a brightfield model (issue 7, item 5) ----------------------------------------

def test_a_brightfield_model_proposes_cells_in_the_label_widget(make_napari_viewer, tiny_bf):
    from blastoseg.annotate import propose
    from blastoseg.annotate.propose import Proposer, load_proposal_predictor
    from blastoseg.errors import BlastosegError
    from blastoseg.io import read_dataset
    from blastoseg.napari._label_widget import LabelWidget
    from blastoseg.predict.brightfield import BrightfieldPredictor

    run = load_proposal_predictor("tiny-bf", device="cpu")
    assert isinstance(run, BrightfieldPredictor)
    assert run.score_threshold == pytest.approx(propose.PROPOSAL_THRESHOLD)
    with pytest.raises(BlastosegError, match="kind 'pix2pix'"):
        load_proposal_predictor("pix2pix-brightfield", device="cpu")

    image = read_dataset(tiny_bf).load_image(0)
    det = Proposer("tiny-bf", device="cpu").detections(image)
    assert det.shape == image.shape[:2]
    assert all(s >= propose.PROPOSAL_THRESHOLD for s in det.scores)

    widget = LabelWidget(make_napari_viewer())
    assert "tiny-bf" in widget.model.choices  # a choice of "Propose at clicks"
    assert any(label == "tiny-bf (brightfield)" for label, _ in widget._models())


@pytest.mark.gui
def test_the_finetune_widget_trains_a_brightfield_model(make_napari_viewer, qtbot, tiny_bf,
                                                        tmp_path):
    from blastoseg.napari._train_widget import TrainWidget
    from blastoseg.weights import resolve_model

    widget = TrainWidget(make_napari_viewer())
    assert "tiny-bf" in widget.base.choices
    widget.base.value = "tiny-bf"
    widget.train_data.value = widget.val_data.value = str(tiny_bf)
    widget.length.value, widget.unit.value = 1, "epochs"
    widget.device.value = "cpu"
    widget.name.value = "tiny-bf-ft"
    widget.job_dir.value = str(tmp_path / "ft")
    widget.start()
    try:
        qtbot.waitUntil(lambda: widget._progress.state in ("done", "failed"), timeout=180_000)
    finally:
        if widget._popen is not None and widget._popen.poll() is None:
            widget._popen.kill()
    assert widget._progress.state == "done", widget.status.value
    entry = resolve_model("tiny-bf-ft")
    assert entry.kind == "brightfield" and entry.card.base_model == "tiny-bf"
