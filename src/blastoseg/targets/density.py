"""Cell-Net's training targets (S2 section IV.A, Fig. 7b): shape-aware elliptical Gaussian dots.

One dot per blastomere, centred on the centroid of its AMODAL mask. The dot's covariance
follows the ellipse fitted to the mask (its second moments): its axes are ``sigma_ratio`` x
the ellipse's semi-axes and it has the ellipse's orientation, so a long cell gets a long dot
along its long axis (the paper's "shape-aware" annotation instead of a fixed round kernel).
Each dot is normalised to sum to exactly 1 over the map (the part inside the image), so the
map integrates to the number of cells. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DotEllipse", "density_map", "fit_ellipse", "gaussian_dot"]

#: default dot axes as a fraction of the fitted ellipse's semi-axes
DEFAULT_SIGMA_RATIO = 0.3
#: smallest dot sigma in pixels (a tiny or one-pixel mask still gives a smooth dot)
MIN_SIGMA = 1.0


@dataclass(frozen=True)
class DotEllipse:
    """The ellipse fitted to one mask: centroid (y, x), semi-axes a >= b (px) and the angle of
    the long axis, radians, counter-clockwise from the +x (column) axis towards -y (up)."""

    cy: float
    cx: float
    a: float
    b: float
    angle: float


def fit_ellipse(mask: np.ndarray) -> DotEllipse:
    """The ellipse with the same centroid and second moments as ``mask`` (for a filled
    ellipse of semi-axes a, b the variances along its axes are a^2/4 and b^2/4)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2D, got shape {m.shape}")
    ys, xs = np.nonzero(m)
    if len(ys) == 0:
        raise ValueError("cannot fit an ellipse to an empty mask")
    cy, cx = float(ys.mean()), float(xs.mean())
    dy, dx = ys - cy, xs - cx
    # pixel = unit square: add its own variance 1/12 so a one-pixel mask is not degenerate
    cov = np.array([[np.mean(dx * dx), np.mean(dx * dy)],
                    [np.mean(dx * dy), np.mean(dy * dy)]]) + np.eye(2) / 12.0
    evals, evecs = np.linalg.eigh(cov)  # ascending
    a, b = 2.0 * np.sqrt(evals[1]), 2.0 * np.sqrt(evals[0])
    vx, vy = evecs[0, 1], evecs[1, 1]
    angle = float(np.arctan2(-vy, vx))  # image rows grow downwards: up is -y
    angle = (angle + np.pi / 2) % np.pi - np.pi / 2  # an axis, not a direction
    return DotEllipse(cy, cx, float(a), float(b), angle)


def gaussian_dot(shape: tuple[int, int], ellipse: DotEllipse,
                 sigma_ratio: float = DEFAULT_SIGMA_RATIO) -> np.ndarray:
    """(H, W) float64 elliptical Gaussian at the ellipse's centroid, axes ``sigma_ratio`` x
    its semi-axes (at least :data:`MIN_SIGMA`), summing to 1 over the image (a dot at the
    border keeps its inside part, renormalised)."""
    h, w = int(shape[0]), int(shape[1])
    sa = max(sigma_ratio * ellipse.a, MIN_SIGMA)
    sb = max(sigma_ratio * ellipse.b, MIN_SIGMA)
    c, s = np.cos(ellipse.angle), np.sin(ellipse.angle)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = xx - ellipse.cx, -(yy - ellipse.cy)  # y up, as the angle is defined
    u = dx * c + dy * s          # along the long axis
    v = -dx * s + dy * c         # along the short axis
    g = np.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2))
    total = g.sum()
    if not total > 0:  # a centroid far outside the image: put its unit mass at the nearest pixel
        g = np.zeros((h, w))
        g[int(np.clip(round(ellipse.cy), 0, h - 1)), int(np.clip(round(ellipse.cx), 0, w - 1))] = 1
        return g
    return g / total


def density_map(masks: np.ndarray, sigma_ratio: float = DEFAULT_SIGMA_RATIO
                ) -> tuple[np.ndarray, np.ndarray]:
    """The density target of one frame from its (N, H, W) amodal masks.

    Returns ``(density, centroids)``: (H, W) float32 summing to the number of non-empty masks,
    and (N', 2) float (y, x) centroids of those masks. Empty masks are skipped.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {m.shape}")
    if not sigma_ratio > 0:
        raise ValueError(f"sigma_ratio must be > 0, got {sigma_ratio!r}")
    h, w = m.shape[1:]
    out = np.zeros((h, w), np.float64)
    centroids = []
    for mk in m:
        if not mk.any():
            continue
        ell = fit_ellipse(mk)
        out += gaussian_dot((h, w), ell, sigma_ratio)
        centroids.append((ell.cy, ell.cx))
    return out.astype(np.float32), np.asarray(centroids, np.float64).reshape(-1, 2)
