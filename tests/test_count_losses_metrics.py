"""CBMSE (S2 eq. 2) and the counting / localisation metrics of Tables 3-6: known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blastoseg.metrics.counting_density import (
    count_from_density,
    density_peaks,
    evaluate_density_counts,
    localisation_metrics,
)
from blastoseg.targets.density import density_map
from blastoseg.train.count_losses import attention_map, cbmse_loss, mse_loss


def test_cbmse_with_alpha_zero_is_the_mse_and_weights_content_more():
    torch.manual_seed(0)
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 2:4, 2:4] = 1.0
    pred = torch.rand(1, 1, 8, 8)
    assert float(cbmse_loss(pred, target, alpha=0.0, scale=1.0)) == pytest.approx(
        float(((pred - target) ** 2).mean()))
    assert float(mse_loss(pred, target, scale=1.0)) == pytest.approx(
        float(((pred - target) ** 2).mean()))
    m = attention_map(target, alpha=4.0, tau=0.05)
    assert float(m[0, 0, 2, 2]) == 5.0 and float(m[0, 0, 0, 0]) == 1.0
    # an error of 1 on one content pixel costs (1 + alpha) / 64
    pred = target.clone()
    pred[0, 0, 2, 2] += 1.0
    assert float(cbmse_loss(pred, target, alpha=4.0, scale=1.0)) == pytest.approx(5.0 / 64)
    with pytest.raises(ValueError, match="differ in shape"):
        cbmse_loss(pred, target[..., :4])


def _two_cells():
    yy, xx = np.mgrid[0:96, 0:96]
    masks = np.stack([(yy - 30) ** 2 + (xx - 30) ** 2 <= 144,
                      (yy - 60) ** 2 + (xx - 65) ** 2 <= 144])
    return density_map(masks)


def test_count_and_peaks_of_a_perfect_density():
    density, centroids = _two_cells()
    count, integral = count_from_density(density)
    assert count == 2 and integral == pytest.approx(2.0, abs=1e-4)
    peaks = density_peaks(density, count, radius=4)
    order = np.argsort(peaks[:, 0])
    assert peaks[order] == pytest.approx(centroids, abs=0.3)
    r = evaluate_density_counts([centroids], [count], [peaks])
    assert r["count_exact"] == 1.0 and r["detection_rate"] == 1.0
    assert r["ed_px"] == pytest.approx(0.0, abs=0.3) and r["misses"] == 0
    assert r["perfect_rate"] == 1.0


def test_a_centroid_12_px_away_is_a_miss_and_2_px_is_perfect():
    gt = [np.array([[10.0, 10.0], [50.0, 50.0]])]
    pred = [np.array([[10.0, 22.0], [50.0, 52.0]])]
    r = localisation_metrics(gt, pred)
    assert r["detection_rate"] == 0.5 and r["misses"] == 1 and r["perfect"] == 1
    assert r["ed_px"] == pytest.approx(2.0)
    exact = localisation_metrics(gt, [gt[0].copy()])
    assert exact["detection_rate"] == 1.0 and exact["ed_px"] == 0.0


def test_bad_density_is_a_clear_error():
    from blastoseg.metrics.coco_eval import MetricsError

    with pytest.raises(MetricsError, match="NaN"):
        count_from_density(np.full((4, 4), np.nan))
    with pytest.raises(MetricsError, match="2D"):
        count_from_density(np.zeros((2, 4, 4)))
