import math

import numpy as np
from skimage.draw import disk

from blastoseg.instances import FrameInstances
from blastoseg.measure import cell_overlaps, measure_frame, measure_stack, write_measurements_csv


def _frame(radii, centres, shape=(100, 100)):
    masks = np.zeros((len(radii), *shape), bool)
    for m, r, c in zip(masks, radii, centres, strict=True):
        m[disk(c, r, shape=shape)] = True
    return FrameInstances(masks=masks)


def test_two_equal_separate_cells():
    embryo, cells = measure_frame(_frame([10, 10], [(30, 30), (70, 70)]), pixel_size_um=2.0)
    assert embryo.cell_count == 2
    assert embryo.diameter_cv < 0.01
    assert embryo.overlap_fraction == 0
    assert abs(cells[0].diameter_px - 20) < 1.0
    assert math.isclose(cells[0].diameter_um, cells[0].diameter_px * 2.0)
    assert cells[0].eccentricity < 0.2


def test_overlap_and_uneven_sizes():
    embryo, cells = measure_frame(_frame([20, 8], [(50, 50), (50, 62)]))
    # the small cell lies mostly inside the big one
    assert cells[1].overlap_fraction > 0.5
    assert cells[0].overlap_fraction < cells[1].overlap_fraction
    assert embryo.diameter_cv > 0.3
    assert 0 < embryo.overlap_fraction < 1


def test_stack_and_csv(tmp_path):
    frames = [_frame([10], [(50, 50)]), _frame([10, 10], [(30, 30), (70, 70)])]
    per_frame, per_cell = measure_stack(frames)
    assert [f.cell_count for f in per_frame] == [1, 2]
    assert len(per_cell) == 3
    path = write_measurements_csv(per_frame, tmp_path / "f.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("frame,cell_count") and len(lines) == 3


def test_cell_overlaps_on_hand_made_squares():
    masks = np.zeros((5, 64, 64), bool)
    masks[0, 10:30, 10:30] = True  # a: 400 px
    masks[1, 20:40, 25:45] = True  # b: overlaps a in 10 x 5 = 50 px
    masks[2, 25:35, 12:28] = True  # d: overlaps a (80 px) and b (30 px)
    masks[3, 50:55, 50:55] = True  # c: alone
    masks[4, 50:55, 55:60] = True  # e: touches c, shares no pixel
    overlap_px, neighbours = cell_overlaps(FrameInstances(masks=masks))
    # a's overlap is the UNION of its parts under b (50) and d (80), which share 15 px
    assert overlap_px.tolist() == [115, 65, 95, 0, 0]
    assert neighbours.tolist() == [2, 2, 2, 0, 0]
    _, cells = measure_frame(FrameInstances(masks=masks, track_ids=[6, 2, 0, 1, 3]))
    assert [c.instance for c in cells] == [7, 3, 1, 2, 4]  # the label napari shows
    assert cells[0].overlap_fraction == 115 / 400 and cells[0].overlap_px == 115
