"""Issue 18 item 2: running Segment again silently threw away corrections painted into the
amodal layers. Result layers remember what they were written with; a re-run asks (keep the
corrected layers under a new name, replace them, or not run) and never drops an edit made
while the model ran."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from blastoseg.napari.compressed_stack import CompressedStack
from blastoseg.napari.result_edits import (
    corrected_group_name,
    data_digest,
    edited_layers,
    keep_as_corrected,
    remember_written,
)


def _layer(data, group="embryo", role="amodal", name=None):
    return SimpleNamespace(data=data, name=name or f"{group}: {role} 1",
                           metadata={"blastoseg": {"group": group, "role": role}})


def test_a_painted_stroke_is_an_edit_and_its_undo_is_not():
    stack = CompressedStack.from_array(np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8) % 5)
    plain = np.asarray(stack).copy()
    layers = [_layer(stack), _layer(plain, name="embryo: amodal 2"),
              _layer(np.zeros((8, 8), np.uint8), role="centroids")]
    for la in layers:
        remember_written(la)
    assert edited_layers(layers) == []
    assert data_digest(stack) == data_digest(CompressedStack.from_array(plain))
    before = stack[1, 2:4, 2:4].copy()
    stack[1, 2:4, 2:4] = 9  # a brush stroke on frame 1
    plain[2, 0, 0] += 1
    assert edited_layers(layers) == layers[:2]
    stack[1, 2:4, 2:4] = before  # undone: the same data again
    plain[2, 0, 0] -= 1
    assert edited_layers(layers) == []
    assert edited_layers([_layer(plain)]) == []  # never written by blastoseg: nothing to compare


def test_kept_corrections_move_to_a_group_of_their_own():
    layers = [_layer(np.ones((4, 4), np.uint8), role=r, name=f"embryo: {r}")
              for r in ("visible", "amodal", "centroids")]
    assert corrected_group_name("embryo", {"embryo"}) == "corrected embryo"
    assert corrected_group_name("embryo", {"corrected embryo", "corrected embryo (2)"}) == (
        "corrected embryo (3)")
    new = keep_as_corrected(layers, {"embryo"})
    assert new == "corrected embryo"
    assert [la.name for la in layers] == [
        "corrected embryo: visible", "corrected embryo: amodal", "corrected embryo: centroids"]
    assert {la.metadata["blastoseg"]["group"] for la in layers} == {new}
    assert all(la.metadata["blastoseg"]["source_image"] == "embryo" for la in layers)
    assert edited_layers(layers) == []


# --- in a viewer, through the base of the model-running widgets ---------------------------------

@pytest.mark.gui
def test_a_rerun_asks_before_replacing_corrections(make_napari_viewer, qtbot, monkeypatch,
                                                   tmp_path):
    from tests.test_model_run_widget import FakePredictor, _widget_class

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path))
    monkeypatch.setattr("blastoseg.predict.base.load_predictor",
                        lambda name, device="auto", *, kind=None, **o: FakePredictor(name))
    monkeypatch.setattr("blastoseg.napari._ui.model_names", lambda *kinds: ["fake"])
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).integers(1, 200, (3, 24, 24)).astype(np.uint8),
                     name="lapse")
    widget = _widget_class()(viewer)
    widget.mode.value = "whole stack"
    answers, asked = [], []

    def ask(parent, group, names):
        asked.append((group, names))
        return answers.pop(0)

    widget.ask_about_corrections = ask

    def run():
        widget.start()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)

    def names():
        return [la.name for la in viewer.layers]

    run()
    run()  # nothing corrected: replaced without a question
    assert not asked and names() == ["lapse", "lapse: mask"]
    mask = viewer.layers["lapse: mask"]
    mask.paint((1, 3, 3), 7)  # the user corrects frame 1

    answers.append("cancel")
    widget.start()
    assert widget.worker is None and asked == [("lapse", ["lapse: mask"])]
    assert names() == ["lapse", "lapse: mask"] and "not run" in widget.status.value

    answers.append("keep")
    run()
    assert names() == ["lapse", "corrected lapse: mask", "lapse: mask"]
    kept = viewer.layers["corrected lapse: mask"]
    assert kept is mask and kept.data[1, 3, 3] == 7
    assert widget.status.value.endswith("your corrections were kept as 'corrected lapse'")

    viewer.layers["lapse: mask"].paint((0, 5, 5), 9)
    answers.append("replace")
    run()
    assert names() == ["lapse", "corrected lapse: mask", "lapse: mask"]
    assert viewer.layers["lapse: mask"].data[0, 5, 5] != 9
    assert len(asked) == 3 and not answers

    # corrected while the model runs: kept without a question (the run had nothing to ask)
    widget.delay = 0.2
    widget.start()
    viewer.layers["lapse: mask"].paint((2, 1, 1), 5)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert len(asked) == 3
    assert names() == ["lapse", "corrected lapse: mask", "corrected lapse (2): mask",
                       "lapse: mask"]
    assert viewer.layers["corrected lapse (2): mask"].data[2, 1, 1] == 5
