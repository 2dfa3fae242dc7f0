"""The "Probability-map preview" dock widget: live P of a labels layer, variants, stacks,
result groups, bad input and the export."""

import numpy as np
import pytest

from blastoseg.targets.probability import probability_map

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))  # the widget's settings


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _labels(shape=(64, 80)):
    lab = np.zeros(shape, np.int32)
    lab[_disc(shape, 24, 22, 14)] = 1
    lab[_disc(shape, 36, 50, 16)] = 2
    lab[_disc(shape, 52, 20, 8)] = 3
    return lab


def _widget(viewer, source=None):
    from blastoseg.napari._probability_widget import ProbabilityWidget

    widget = ProbabilityWidget(viewer)
    widget.reset_choices()
    if source is not None:
        widget.labels.value = source
    return widget


def _preview(viewer):
    layers = [la for la in viewer.layers
              if la.metadata.get("blastoseg", {}).get("role") == "probability_preview"]
    assert len(layers) == 1
    return layers[0]


def test_live_preview_follows_paint_and_variant(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels = viewer.add_labels(_labels(), name="cells")
    widget = _widget(viewer, "layer:cells")
    p = _preview(viewer)
    assert p.name == "cells P (border)"
    defaults = widget.variant_params()
    np.testing.assert_array_equal(p.data, probability_map(labels.data, "border", **defaults))
    assert "3 cells" in widget.status.value
    assert viewer.layers.selection.active is labels  # painting goes on in the labels layer

    # a brush stroke: the preview follows (debounced) and equals P of the new labels
    labels.brush_size = 7
    labels.paint((10, 70), 5)
    want = probability_map(np.asarray(labels.data), "border", **defaults)
    qtbot.waitUntil(lambda: np.array_equal(p.data, want), timeout=3000)
    assert "4 cells" in widget.status.value
    # erasing a whole cell (data replaced)
    new = np.asarray(labels.data).copy()
    new[new == 3] = 0
    labels.data = new
    want = probability_map(new, "border", **defaults)
    qtbot.waitUntil(lambda: np.array_equal(p.data, want), timeout=3000)

    # the variant decides which parameters are shown; the layer is renamed
    assert widget.shown_params() == ["background", "floor", "log_scale"]
    widget.variant.value = "combined_border_overlap"
    assert widget.shown_params() == ["background", "floor", "log_scale", "overlap_width"]
    assert p.name == "cells P (combined_border_overlap)"
    widget.params["log_scale"].value = 3.0
    np.testing.assert_array_equal(
        p.data, probability_map(new, "combined_border_overlap", **widget.variant_params()))
    assert widget.variant_params()["log_scale"] == 3.0
    widget.variant.value = "none"
    assert widget.shown_params() == []
    assert np.all(p.data == 1)
    assert len(viewer.layers) == 2  # one preview layer, updated in place
    # the choices come back in a new widget
    again = _widget(viewer)
    assert again.variant.value == "none" and again.params["log_scale"].value == 3.0


def test_stack_follows_time_slider_and_nuclei(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    frames = np.stack([_labels(), np.roll(_labels(), 9, axis=1), np.zeros((64, 80), np.int32)])
    viewer.add_labels(frames, name="lapse")
    nuclei = np.stack([(f > 0) & _disc(f.shape, 30, 40, 12) for f in frames]).astype(np.uint8)
    viewer.add_labels(nuclei, name="lapse_nuclei")  # a mask: never the default labels
    widget = _widget(viewer, "layer:lapse")
    widget.variant.value = "nuclei"
    p = _preview(viewer)
    params = widget.variant_params()
    viewer.dims.set_current_step(0, 1)
    want = probability_map(frames[1], "nuclei", **params)
    qtbot.waitUntil(lambda: np.array_equal(p.data, want), timeout=3000)
    assert widget.status.value.startswith("frame 1:")
    widget.nuclei.value = "lapse_nuclei"
    np.testing.assert_array_equal(p.data, probability_map(frames[1], "nuclei",
                                                          nuclei=nuclei[1], **params))
    viewer.dims.set_current_step(0, 2)  # an empty frame: background everywhere, said so
    qtbot.waitUntil(lambda: "no cells" in widget.status.value, timeout=3000)
    assert np.allclose(p.data, params["background"])


def test_result_group_with_overlapping_cells(make_napari_viewer, qtbot):
    from blastoseg.instances import FrameInstances
    from blastoseg.napari.result_layers import apply_display, result_layer_data

    shape = (64, 80)
    masks = np.stack([_disc(shape, 30, 28, 16), _disc(shape, 30, 46, 16),
                      _disc(shape, 50, 60, 8)])
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(shape, np.uint8), name="img")
    for data, kw, kind in result_layer_data([FrameInstances(masks=masks)], "img"):
        layer = viewer._add_layer_from_data(data, kw, kind)
        for la in (layer if isinstance(layer, list) else [layer]):
            apply_display(la)
    widget = _widget(viewer)
    assert widget.labels.value == "group:img"  # the result group is offered first
    widget.variant.value = "overlap_extended"
    p = _preview(viewer)
    assert p.name == "img P (overlap_extended)"
    np.testing.assert_array_equal(
        p.data, probability_map(masks, "overlap_extended", **widget.variant_params()))
    assert p.data.max() == 1.0  # the overlap of the two discs is found across layers


def test_bad_input_is_explained(make_napari_viewer, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    assert "no labels" in widget.status.value  # nothing to preview, no crash
    viewer.add_image(np.random.default_rng(0).random((40, 40)), name="intensity")
    assert widget.labels.value is None and not shown  # an image is never picked by itself
    one = np.zeros((40, 40), np.uint16)
    one[5:30, 8:33] = 4
    viewer.add_labels(one, name="one")
    assert widget.labels.value == "layer:one"  # a new Labels layer is
    assert "1 cell" in widget.status.value and len(viewer.layers) == 3
    widget.labels.value = "image:intensity"
    assert shown and "integer labels" in shown[-1]
    assert widget.status.value.startswith("error:")
    viewer.add_labels(np.zeros((30, 30), np.uint8), name="small")
    widget.labels.value = "layer:one"
    widget.nuclei.value = "small"
    assert "same size" in shown[-1]


@pytest.mark.slow
def test_export_from_the_widget(make_napari_viewer, qtbot, tmp_path):
    from blastoseg.instances import FrameInstances
    from blastoseg.io import read_dataset, write_dataset
    from blastoseg.io.dataset import Sample

    shape = (48, 48)
    masks = np.stack([_disc(shape, 20, 18, 12), _disc(shape, 26, 32, 12)])
    write_dataset(tmp_path / "ds", [Sample(image=np.zeros(shape, np.uint8),
                                           instances=FrameInstances(masks=masks))] * 2)
    viewer = make_napari_viewer()
    viewer.add_labels(_labels(), name="cells")
    widget = _widget(viewer, "layer:cells")
    widget.variant.value = "combined_border_overlap"
    widget.export_to(tmp_path / "ds")
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20_000)
    assert "2 maps" in widget.status.value, widget.status.value
    ds = read_dataset(tmp_path / "ds")
    assert ds.info["probability"]["variant"] == "combined_border_overlap"
    assert all((tmp_path / "ds" / e["probability_file"]).is_file() for e in ds.images)


def test_both_widgets_dock_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_labels(_labels(), name="cells")
    for title in ("Overlap map", "Probability-map preview"):
        dock, widget = viewer.window.add_plugin_dock_widget("blastoseg", title)
        assert dock is not None and widget is not None
    assert "cells P (border)" in viewer.layers  # the preview starts with the labels layer


def test_defaults_are_the_labels_and_nuclei_of_the_shown_image(make_napari_viewer, tmp_path):
    """Issue 18 item 12: the preview picked another image's labels by default, and a
    dataset's ``N_nuclei.tif`` opened through the reader was not offered as nuclei."""
    import tifffile

    from blastoseg.instances import FrameInstances
    from blastoseg.napari.result_layers import result_layer_data

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 80), np.uint8), name="first")
    masks = np.stack([_disc((64, 80), 30, 28, 16), _disc((64, 80), 30, 46, 16)])
    for data, kw, kind in result_layer_data([FrameInstances(masks=masks)], "first"):
        viewer._add_layer_from_data(data, kw, kind)
    lab = np.zeros((48, 56), np.int32)
    lab[_disc(lab.shape, 20, 20, 10)] = 1
    tifffile.imwrite(tmp_path / "2.tif", (lab * 90).astype(np.uint8))
    tifffile.imwrite(tmp_path / "2_nuclei.tif", (_disc(lab.shape, 20, 20, 4) * 255).astype(np.uint8))
    viewer.open(tmp_path / "2.tif", plugin="blastoseg")
    viewer.open(tmp_path / "2_nuclei.tif", plugin="blastoseg")
    nuclei = viewer.layers["2_nuclei"]
    assert nuclei.__class__.__name__ == "Labels"  # a mask, not an image
    viewer.add_labels(lab, name="2_labels")

    viewer.layers.selection.active = viewer.layers["2"]  # the user looks at image 2
    widget = _widget(viewer)
    assert widget.labels.value == "layer:2_labels"  # not the first image's result group
    assert widget.nuclei.value == "2_nuclei"  # offered, and chosen for its image
    assert "2_nuclei" in [c for c in widget.nuclei.choices]

    viewer.layers.selection.active = viewer.layers["first"]
    widget = _widget(viewer)
    assert widget.labels.value == "group:first" and widget.nuclei.value is None
    viewer.layers.selection.active = viewer.layers["2_labels"]  # the active labels win
    assert _widget(viewer).labels.value == "layer:2_labels"
