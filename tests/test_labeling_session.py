"""LabelingSession (no Qt): project <-> layers, edit operations, undo, autosave round trip."""

from __future__ import annotations

import numpy as np
import pytest

from blastoseg.annotate import AnnotationProject
from blastoseg.annotate.shapes import ellipse_mask
from blastoseg.napari.compressed_stack import CompressedStack
from blastoseg.napari.labeling import LabelingSession
from blastoseg.synth import EmbryoConfig, render_timelapse


@pytest.fixture()
def project(tmp_path):
    lapse = render_timelapse(34, seed=2, config=EmbryoConfig(image_size=(160, 160)))
    frames = lapse.frames[-3:]  # 6 cells, tracked
    return AnnotationProject.create(tmp_path / "proj", lapse.images[-3:], frames), frames


def _same_cells(a, b):
    assert len(a) == len(b)
    order_a, order_b = np.argsort(a.track_ids), np.argsort(b.track_ids)
    np.testing.assert_array_equal(a.masks[order_a], b.masks[order_b])


def test_layers_show_the_project_exactly(project):
    proj, frames = project
    session = LabelingSession.start(proj, "annotated lapse")
    assert all(isinstance(la, CompressedStack) for la in session.layers)
    for t in range(3):
        _same_cells(session.read_frame(t), proj.instances(t))
    kw = session.layer_kwargs(0)
    assert kw["name"] == "annotated lapse: amodal 1"
    assert kw["metadata"]["blastoseg"]["role"] == "amodal"


def test_operations_undo_and_reopen(project, tmp_path):
    proj, _ = project
    session = LabelingSession.start(proj, "g")
    t = 2
    cells = session.cells(t)
    ids = [c["id"] for c in cells]
    assert len(ids) >= 2

    session.delete(t, [ids[0]])
    assert [c["id"] for c in session.cells(t)] == ids[1:]
    assert session.undo() == t
    assert [c["id"] for c in session.cells(t)] == ids

    session.merge(t, ids[:2])
    merged = [c for c in session.cells(t) if c["id"] == min(ids[:2])][0]
    assert len(session.cells(t)) == len(ids) - 1
    assert merged["area"] >= max(c["area"] for c in cells if c["id"] in ids[:2])
    session.undo()

    # a new cell drawn as an ellipse gets a fresh id, unused in every frame
    mask = ellipse_mask((160, 160), (20, 20), (10, 8), 0.0)
    session.add_mask(t, mask)
    new = [c for c in session.cells(t) if c["id"] not in ids]
    assert len(new) == 1 and new[0]["area"] == int(mask.sum())
    assert all(new[0]["id"] not in proj.instances(k).track_ids for k in range(t))

    # painting in a layer is read back by sync_frame and saved
    k, _ = session.empty_layer_for(0)
    plane = session.placement.plane(session.layers[k], 0).copy()
    plane[140:150, 140:150] = 99
    session.placement.set_plane(session.layers[k], 0, plane)
    assert session.sync_frame(0)
    assert not proj.is_dirty

    again = AnnotationProject.open(tmp_path / "proj")
    assert 98 in again.instances(0).track_ids
    assert len(again.instances(t)) == len(ids) + 1
    reopened = LabelingSession.start(again, "g")
    for f in range(3):
        _same_cells(reopened.read_frame(f), again.instances(f))


def test_single_frame_project_uses_plain_arrays(tmp_path):
    from blastoseg.synth import render_embryo

    fr = render_embryo(3, seed=1, config=EmbryoConfig(image_size=(128, 128)))
    proj = AnnotationProject.create(tmp_path / "one", fr.image, [fr.instances])
    session = LabelingSession.start(proj, "one")
    assert all(isinstance(la, np.ndarray) and la.shape == (128, 128) for la in session.layers)
    _same_cells(session.read_frame(0), proj.instances(0))
    session.delete(0, [session.cells(0)[0]["id"]])
    assert len(AnnotationProject.open(tmp_path / "one").instances(0)) == 2
