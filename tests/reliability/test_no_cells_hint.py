"""Issue 18 item 11: a 2000 x 2000 field gave "0 cells" with no hint why. Now the CLI and
the Segment widget say what was seen (no embryo found, the whole frame shrunk so far that an
embryo is too small, localisation off, a guessed place, nothing above the threshold) and what
to try."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.transform import resize

from blastoseg.predict.no_cells import smallest_visible_embryo_px, why_no_cells


@pytest.fixture(scope="module")
def field():
    """A 2000 x 2000 field with a 125 px embryo in its middle (the localiser finds none)."""
    from blastoseg.synth import render_embryo

    img = render_embryo(4, seed=4).image
    rng = np.random.default_rng(0)
    big = rng.normal(float(np.median(img[:20])), 3, (2000, 2000)).clip(0, 255).astype(np.uint8)
    big[900:1025, 900:1025] = resize(img.astype(float), (125, 125), anti_aliasing=True)
    return big


def test_the_reasons_and_what_to_try():
    # the whole 2000 px frame at the model's 256 px: embryos under ~870 px are too small
    assert smallest_visible_embryo_px(0.128, 256) == pytest.approx(870, abs=1)
    whole = {"embryo": {"source": "whole frame", "note": "no embryo found", "confidence": 0.0,
                        "image_shape": [2000, 2000]},
             "embryo_box": {"scale": 0.128, "size": 256}, "embryo_unsure": True}
    why = why_no_cells(whole)
    assert why.startswith("no embryo was found in the 2000 x 2000 frame")
    assert "shrunk 7.8 times" in why and "under about 870 px" in why and "--diameter" in why
    assert "draw the embryo's circle" in why_no_cells(whole, advice="napari")
    off = {**whole, "embryo": {**whole["embryo"], "note": ""}, "embryo_unsure": False}
    assert "localisation off" in why_no_cells(off)
    found = {"embryo": {"source": "localised", "cx": 250, "cy": 240, "radius": 120,
                        "confidence": 0.9, "image_shape": [500, 500]},
             "embryo_box": {"scale": 0.93, "size": 256}}
    assert why_no_cells(found, 0.5) == (
        "no cell scored above the score threshold 0.5 in the embryo framed at (250, 240), "
        "radius 120 px. Try: check the embryo's circle, or lower --threshold")
    assert "unsure" in why_no_cells({**found, "embryo_unsure": True})
    assert why_no_cells(None)  # a result without framing metadata still gets a sentence


def test_the_cli_says_why_a_large_field_has_no_cells(field, tmp_path, capsys):
    from blastoseg.cli import main

    path = tmp_path / "field.tif"
    tifffile.imwrite(path, field)
    assert main(["segment", "amodal", str(path), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "the frame: no cells: no embryo was found in the 2000 x 2000 frame" in err
    assert "too small" in err


@pytest.mark.gui
def test_the_segment_widget_says_why(field, make_napari_viewer, qtbot, monkeypatch):
    from tests.test_segment_widget import _run, _segment_widget

    warned = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warned.append)
    viewer = make_napari_viewer()
    viewer.add_image(field, name="field")
    widget = _segment_widget(viewer, "amodal-default", threshold=0.5)
    widget.crops.value = False  # (another test may have saved it ticked) localise the embryo
    _run(widget, qtbot)
    assert widget.status.value.startswith("0 cells")
    assert "No cells: no embryo was found in the 2000 x 2000 frame" in widget.status.value
    assert any("too small" in w and "draw the embryo's circle" in w for w in warned)
