"""Shape-aware elliptical Gaussian dots (S2 section IV.A, Fig. 7b)."""

from __future__ import annotations

import numpy as np
import pytest

from blastoseg.targets.density import density_map, fit_ellipse, gaussian_dot


def _ellipse_mask(shape, cy, cx, a, b, angle):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    dx, dy = xx - cx, -(yy - cy)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def test_each_dot_sums_to_one_and_the_map_to_the_number_of_cells():
    masks = np.stack([_ellipse_mask((96, 96), 30, 30, 12, 10, 0.3),
                      _ellipse_mask((96, 96), 60, 62, 15, 9, -1.0),
                      _ellipse_mask((96, 96), 2, 90, 10, 10, 0.0),   # at the border
                      np.zeros((96, 96), bool)])                   # empty: skipped
    density, centroids = density_map(masks)
    assert density.dtype == np.float32 and density.shape == (96, 96)
    assert float(density.sum(dtype=np.float64)) == pytest.approx(3.0, abs=1e-5)
    assert len(centroids) == 3
    for m in masks[:3]:
        assert gaussian_dot((96, 96), fit_ellipse(m)).sum() == pytest.approx(1.0, abs=1e-9)


def test_an_elongated_cell_gives_an_elongated_dot_along_its_axis():
    angle = np.deg2rad(30)
    mask = _ellipse_mask((128, 128), 64, 64, 30, 10, angle)
    ell = fit_ellipse(mask)
    assert ell.angle == pytest.approx(angle, abs=np.deg2rad(2))
    assert ell.a == pytest.approx(30, rel=0.05) and ell.b == pytest.approx(10, rel=0.1)
    dot = gaussian_dot((128, 128), ell, sigma_ratio=0.3)
    # second moments of the dot: long axis along the cell's, aspect ratio ~3
    yy, xx = np.mgrid[0:128, 0:128].astype(float)
    cy, cx = (dot * yy).sum(), (dot * xx).sum()
    assert (cy, cx) == pytest.approx((64, 64), abs=0.1)
    dx, dy = xx - cx, -(yy - cy)
    cov = np.array([[(dot * dx * dx).sum(), (dot * dx * dy).sum()],
                    [(dot * dx * dy).sum(), (dot * dy * dy).sum()]])
    evals, evecs = np.linalg.eigh(cov)
    assert np.sqrt(evals[1] / evals[0]) == pytest.approx(3.0, rel=0.1)
    long_axis = np.arctan2(evecs[1, 1], evecs[0, 1])
    assert abs(np.sin(long_axis - angle)) < np.sin(np.deg2rad(2))


def test_bad_masks_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        density_map(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="empty mask"):
        fit_ellipse(np.zeros((4, 4), bool))
