"""Packing overlapping instances into Labels layers and back must be lossless."""

import numpy as np
import pytest
from skimage.draw import disk

from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.napari.layer_conversion import instances_to_label_layers, label_layers_to_instances


def _discs(shape, centres, radius, track_ids=None):
    masks = np.zeros((len(centres), *shape), dtype=bool)
    for i, c in enumerate(centres):
        masks[i][disk(c, radius, shape=shape)] = True
    return FrameInstances(masks=masks, track_ids=track_ids)


def test_overlapping_instances_go_to_different_layers_and_round_trip():
    inst = _discs((64, 64), [(20, 20), (25, 28), (30, 22), (50, 50)], 10)
    layers = instances_to_label_layers([inst])
    # the three mutually overlapping discs need three layers; the far one shares one
    assert len(layers) == 3
    for layer in layers:
        assert layer.shape == (1, 64, 64)
    back = label_layers_to_instances(layers)[0]
    assert len(back) == 4
    np.testing.assert_array_equal(back.masks, inst.masks)


def test_no_two_instances_of_a_layer_overlap_and_union_is_preserved():
    rng = np.random.default_rng(0)
    centres = [tuple(rng.integers(10, 54, 2)) for _ in range(8)]
    inst = _discs((64, 64), centres, 12)
    layers = instances_to_label_layers([inst])
    coverage = sum((layer[0] > 0).astype(int) for layer in layers)
    np.testing.assert_array_equal(coverage, inst.coverage())


def test_track_ids_become_labels_and_keep_their_layer_over_time():
    a = _discs((48, 48), [(15, 15), (20, 22)], 9, track_ids=[0, 5])
    b = _discs((48, 48), [(16, 15), (21, 23), (40, 40)], 9, track_ids=[0, 5, 7])
    layers = instances_to_label_layers([a, b])
    values_t0 = {int(v) for layer in layers for v in np.unique(layer[0]) if v}
    assert values_t0 == {1, 6}
    for layer in layers:
        if (layer[0] == 6).any():
            assert (layer[1] == 6).any(), "track 5 moved to another layer between frames"
    back = label_layers_to_instances(layers, labels_are_track_ids=True)
    assert back[1].track_ids.tolist() == [0, 5, 7]
    np.testing.assert_array_equal(back[1].masks, b.masks)


def test_empty_frame_and_same_label_in_two_layers():
    empty = FrameInstances.empty((16, 16))
    layers = instances_to_label_layers([empty])
    assert len(layers) == 1 and not layers[0].any()
    assert len(label_layers_to_instances(layers)[0]) == 0
    a = np.zeros((16, 16), np.uint16)
    a[2:5, 2:5] = 3
    b = np.zeros((16, 16), np.uint16)
    b[8:12, 8:12] = 3
    with pytest.raises(InvalidImageError, match="label 3 appears in two"):
        label_layers_to_instances([a, b])
