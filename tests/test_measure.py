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


def _squares(*boxes, shape=(64, 64)):
    masks = np.zeros((len(boxes), *shape), bool)
    for m, (r0, r1, c0, c1) in zip(masks, boxes, strict=True):
        m[r0:r1, c0:c1] = True
    return FrameInstances(masks=masks)


def test_two_equal_separate_cells():
    # known answers (they were ranges: |d - 20| < 1, CV < 0.01, eccentricity < 0.2)
    frame = _frame([10, 10], [(30, 30), (70, 70)])
    area = int(frame.masks[0].sum())
    embryo, cells = measure_frame(frame, pixel_size_um=2.0)
    assert embryo.cell_count == 2 and embryo.overlap_fraction == 0
    assert embryo.diameter_cv == 0.0  # equal areas, equal diameters
    assert math.isclose(cells[0].diameter_px, math.sqrt(4 * area / math.pi), rel_tol=1e-12)
    assert math.isclose(cells[0].diameter_um, cells[0].diameter_px * 2.0, rel_tol=1e-12)
    assert cells[0].area_px == area and cells[0].overlap_fraction == 0
    _, (rect,) = measure_frame(_squares((10, 30, 10, 20)))  # 20 x 10 px
    # second moments of a 20 x 10 pixel block: (20^2 - 1) / 12 and (10^2 - 1) / 12
    assert math.isclose(rect.eccentricity, math.sqrt(1 - 99 / 399), rel_tol=1e-9)
    _, (square,) = measure_frame(_squares((10, 30, 10, 30)))
    assert square.eccentricity < 1e-6


def test_overlap_and_uneven_sizes():
    # a 20 x 20 cell (400 px) and a 10 x 10 one (100 px) sharing a 5 x 5 corner (25 px)
    embryo, (big, small) = measure_frame(_squares((10, 30, 10, 30), (25, 35, 25, 35)))
    assert small.overlap_fraction == 25 / 100 and big.overlap_fraction == 25 / 400
    assert small.overlap_px == big.overlap_px == 25
    assert math.isclose(big.diameter_px, 2 * small.diameter_px, rel_tol=1e-12)
    # diameters d and 2d: mean 1.5 d, population std 0.5 d
    assert math.isclose(embryo.diameter_cv, 1 / 3, rel_tol=1e-12)
    assert math.isclose(embryo.mean_diameter_px, 1.5 * small.diameter_px, rel_tol=1e-12)
    assert embryo.overlap_fraction == 25 / 475  # covered twice / covered at all


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
