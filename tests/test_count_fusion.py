"""Fusing the density count with the amodal instances (issue 15, item 4): known answers."""

from __future__ import annotations

import numpy as np
import pytest

from blastoseg.instances import FrameInstances
from blastoseg.predict.count import CountResult
from blastoseg.predict.count_fusion import fuse_counts


def _disc(cy, cx, r=8, shape=(64, 64)):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _density(count, peaks):
    return CountResult(count=count, integral=float(count), density=np.zeros((64, 64), np.float32),
                       centroids=np.asarray(peaks, float).reshape(-1, 2))


def test_a_low_scored_instance_under_an_uncounted_peak_is_added():
    inst = FrameInstances(masks=np.stack([_disc(15, 15), _disc(45, 45), _disc(15, 45)]),
                          scores=np.array([0.9, 0.8, 0.2]))
    fused = fuse_counts(_density(3, [(15, 15), (45, 45), (16, 44)]), inst, count_threshold=0.5)
    assert (fused.instance_count, fused.density_count, fused.count) == (2, 3, 3)
    assert fused.added == [2] and len(fused.instances) == 3


def test_no_peak_no_addition_and_an_unsupported_instance_is_dropped():
    inst = FrameInstances(masks=np.stack([_disc(15, 15), _disc(45, 45), _disc(15, 45)]),
                          scores=np.array([0.9, 0.8, 0.2]))
    fused = fuse_counts(_density(3, [(15, 15), (45, 45)]), inst, count_threshold=0.5)
    assert fused.count == 2 and fused.added == []  # no peak near the candidate
    over = FrameInstances(masks=np.stack([_disc(15, 15), _disc(45, 45), _disc(15, 45)]),
                          scores=np.array([0.9, 0.6, 0.7]))
    fused = fuse_counts(_density(2, [(15, 15), (15, 45)]), over, count_threshold=0.5)
    assert fused.count == 2 and fused.dropped == [1]
    with pytest.raises(ValueError, match="low_threshold"):
        fuse_counts(_density(2, []), over, count_threshold=0.1, low_threshold=0.3)
