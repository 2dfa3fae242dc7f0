"""Issue 18 item 8: what a user reads off the result layers. Neighbouring cells got
near-identical colours (napari's random label colours), centroid numbers (white text)
vanished on bright images, and a result's and an annotation's layer names differed only in
their middle, which napari elides."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2lab
from skimage.draw import disk

from blastoseg.instances import FrameInstances


def _frame(n: int = 16, shape=(2000, 2000)) -> FrameInstances:
    masks = np.zeros((n, *shape), bool)
    for i, m in enumerate(masks):  # a ring of overlapping cells
        a = 2 * np.pi * i / n
        m[disk((1000 + 500 * np.sin(a), 1000 + 500 * np.cos(a)), 160, shape=shape)] = True
    return FrameInstances(masks=masks)


def test_the_cells_of_an_embryo_get_clearly_different_colours():
    from napari.layers import Layer

    from blastoseg.napari.result_layers import result_layer_data

    data = result_layer_data([_frame(16, (400, 400))], "embryo")
    for tup in data:
        if tup[2] != "labels":
            continue
        layer = Layer.create(*tup)
        rgb = np.asarray(layer.colormap.map(np.arange(1, 17)))[:, :3]
        lab = rgb2lab(rgb[None])[0]
        dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
        np.fill_diagonal(dist, np.inf)
        assert dist.min() > 30  # napari's default: 12 (two light blues), and L* down to 22
        assert (lab[:, 0] >= 45).all() and (lab[:, 0] <= 80).all()  # on dark and bright images
        # the same cell has the same colour in every layer of the result
        np.testing.assert_array_equal(layer.colormap.map(np.array([3])),
                                      Layer.create(*data[1]).colormap.map(np.array([3])))


def test_centroid_numbers_are_black_on_a_white_badge_that_zooms_with_the_image():
    from napari.layers import Points

    from blastoseg.napari.result_layers import result_layer_data

    coords, kwargs, kind = result_layer_data([_frame(4)], "embryo")[-1]
    assert kind == "points"
    layer = Points(coords, **kwargs)
    assert np.allclose(layer.face_color, [1, 1, 1, 1]) and np.allclose(layer.border_color[:, :3], 0)
    assert np.allclose(layer.text.color.constant[:3], 0)  # black digits (they were white)
    # the badge is ~1/25 of the frame, the digits inside it, both in data units
    assert np.allclose(layer.size, 2000 / 25) and layer.text.scaling
    assert layer.text.size < layer.size[0] / 2 and not np.any(layer.text.translation)
    assert list(layer.features["label"]) == [1, 2, 3, 4]


def test_result_and_annotation_layer_names_differ_at_their_start():
    from blastoseg.napari.labeling import annotation_group
    from blastoseg.napari.result_edits import corrected_group_name

    image = "embryo_2024-03-01_well11_run12_focal0"
    result = f"{image}: amodal 1"
    for other in (f"{annotation_group(image)}: amodal 1",
                  f"{corrected_group_name(image, [])}: amodal 1"):
        assert other[:8] != result[:8]
