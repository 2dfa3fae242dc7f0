"""Known-answer tests for the functions whose small bugs the suite used to miss (issue 18,
"Tests that would catch real bugs"): each test fails on the planted bug the issue names."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from blastoseg.instances import FrameInstances


def test_the_upper_cell_owns_the_overlap_in_the_synthetic_truth():
    """synth.geometry.masks_from_projections: the cell whose upper surface is higher (larger
    top_z) is the visible one where two cells overlap. Flipping the order changes the visible
    masks, the ground truth of all training data."""
    from blastoseg.synth.geometry import Projection, masks_from_projections

    def disc(cx, z):
        yy, xx = np.mgrid[0:20, 0:20]
        mask = (yy - 10) ** 2 + (xx - cx) ** 2 <= 36
        return Projection(y0=0, x0=0, mask=mask, thickness=mask * 1.0,
                          top_z=np.where(mask, z, 0.0).astype(np.float32),
                          edge_dist=np.zeros((20, 20)), center_xy=(cx, 10.0))

    low, high = disc(7, z=1.0), disc(12, z=5.0)
    amodal, visible, occlusion = masks_from_projections([low, high], (20, 20))
    both = amodal[0] & amodal[1]
    assert both.sum() > 0
    assert visible[1][both].all() and not visible[0][both].any()
    assert (visible[0] | visible[1]).sum() == (amodal[0] | amodal[1]).sum()
    assert occlusion[both].min() == 1.0 and occlusion[~both].max() == 0.0
    # the same cells listed the other way round: the higher one still wins
    _, visible_swapped, _ = masks_from_projections([high, low], (20, 20))
    assert visible_swapped[0][both].all()


def test_a_coco_triangle_polygon_is_a_mask():
    """A polygon of exactly 3 points (6 numbers) is the smallest valid one: it must decode
    to its pixels, not to nothing (a `>= 6` turned `> 6` drops it)."""
    from blastoseg.io.coco_rle import decode_segmentation

    mask = decode_segmentation([[2.0, 2.0, 18.0, 2.0, 2.0, 18.0]], 20, 20)
    assert 100 <= mask.sum() <= 160  # the triangle's area is 128 px
    assert mask[4, 4] and not mask[17, 17]


def test_a_centroid_exactly_at_max_dist_still_matches():
    from blastoseg.metrics.counting import centroid_metrics

    gt = np.array([[10.0, 10.0]])
    assert centroid_metrics(gt, np.array([[10.0, 15.0]]), max_dist=5.0)["tp"] == 1
    assert centroid_metrics(gt, np.array([[10.0, 15.01]]), max_dist=5.0)["tp"] == 0
    res = centroid_metrics(gt, np.array([[13.0, 14.0]]), max_dist=5.0)
    assert res["tp"] == 1 and res["mean_distance"] == pytest.approx(5.0)


def test_soft_dice_known_answers():
    """dice(p, t) = 2 sum(p t) / (sum(p^2) + sum(t^2)) (SparseInst / S4 eq. 4.11): squared
    denominators. With soft p the unsquared form gives a different number."""
    from blastoseg.train.sparse_matching import dice_similarity

    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # 2 * 1.0 / (0.5 + 2.0) = 0.8 (unsquared: 2 * 1.0 / (1.0 + 2.0) = 0.667)
    assert float(dice_similarity(p, t, eps=0.0)) == pytest.approx(0.8)
    assert float(dice_similarity(t, t, eps=0.0)) == pytest.approx(1.0)
    assert float(dice_similarity(t, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), eps=0.0)) == 0.0


def test_areas_in_square_micrometres():
    from blastoseg.measure import measure_frame

    mask = np.zeros((1, 40, 40), bool)
    mask[0, 10:20, 5:25] = True  # 10 x 20 = 200 px
    _, cells = measure_frame(FrameInstances(masks=mask), pixel_size_um=0.5)
    assert cells[0].area_px == 200
    assert cells[0].area_um2 == pytest.approx(50.0)  # 200 px x 0.25 um2/px
    assert cells[0].centroid_y == pytest.approx(14.5) and cells[0].centroid_x == pytest.approx(14.5)
    _, no_scale = measure_frame(FrameInstances(masks=mask))
    assert no_scale[0].area_um2 is None


def test_the_atomic_writer_leaves_no_temp_file_and_writes_beside_the_target(tmp_path,
                                                                             monkeypatch):
    from blastoseg.io import atomic

    target = tmp_path / "sub" / "file.bin"
    made: list[str] = []
    real_mkstemp = atomic.tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(atomic.tempfile, "mkstemp", spy)
    atomic.atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    # the temporary file was in the destination folder (os.replace is atomic only within one
    # file system) and is gone
    assert made and all(os.path.dirname(n) == str(target.parent) for n in made)
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"hello"  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temp file left
