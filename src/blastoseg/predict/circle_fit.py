"""The fine stage of embryo localisation: rays from a centre, robust circle fits, and the
contrast that scores a circle (:mod:`blastoseg.predict.localise`); :func:`fit_circle` also
fits a micro-well's rim (:mod:`blastoseg.predict.well`).

Maps are 2D arrays at the localiser's ~256 px working scale; circles are (cy, cx, r) in
their pixel units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RING", "boundary_circle", "boundary_points", "circle_contrast", "fit_circle",
           "outer_face", "polar", "robust_circle_fit"]

#: the ring outside a candidate disk spans radius r .. RING * r
RING = 1.3
_RUN = 0.2        # smooth run that ends the embryo on a ray, fraction of the radius
_REFIT_MIN = 0.7  # the strong-edge refit may shrink the radius to this share, no further

_ANGLES = 64
_SECTORS = 16


def polar(bmap: np.ndarray, cy: float, cx: float, rho: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples of the map on rays from (cy, cx): values, in-frame flags (ANGLES, len(rho)), angles."""
    th = np.linspace(0, 2 * np.pi, _ANGLES, endpoint=False)
    y = cy + rho[None, :] * np.sin(th)[:, None]
    x = cx + rho[None, :] * np.cos(th)[:, None]
    h, w = bmap.shape
    valid = (y >= -0.5) & (y <= h - 0.5) & (x >= -0.5) & (x <= w - 0.5)
    iy = np.clip(np.rint(y).astype(np.intp), 0, h - 1)
    ix = np.clip(np.rint(x).astype(np.intp), 0, w - 1)
    return bmap[iy, ix], valid, th


def fit_circle(py: np.ndarray, px: np.ndarray) -> tuple[float, float, float]:
    """Algebraic (Kasa) least-squares circle through points."""
    a = np.stack([px, py, np.ones_like(px)], axis=1)
    b = px * px + py * py
    (c0, c1, c2), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = c0 / 2, c1 / 2
    return float(cy), float(cx), float(np.sqrt(max(c2 + cx * cx + cy * cy, 0.0)))


def boundary_points(bmap: np.ndarray, cy: float, cx: float, r0: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Where the embryo ends on rays from (cy, cx): the start of the first long run of smooth
    medium on each ray (short gaps - the perivitelline space, the zona's smooth interior -
    are crossed); rays that leave the frame first give no point. Returns (ys, xs)."""
    rho = np.arange(0.0, 1.6 * r0, 0.5)
    v, valid, th = polar(bmap, cy, cx, rho)
    start = np.searchsorted(rho, 0.5 * r0)
    outside = (v < 0.5) & valid
    # a boundary is where a ray enters a run of outside samples at least 0.12 r0 long (small
    # holes in the filled map are not boundaries)
    run = max(3, int(round(_RUN * r0 / 0.5)))
    cs = np.concatenate([np.zeros((_ANGLES, 1)), np.cumsum(outside, axis=1)], axis=1)
    n = len(rho)
    ends = np.minimum(np.arange(n) + run, n)
    full_run = (cs[:, ends] - cs[:, :n]) >= (ends - np.arange(n))[None, :] - 0.5
    full_run &= (ends - np.arange(n) >= run)[None, :]
    full_run[:, :start] = False
    ys, xs = [], []
    for a in range(_ANGLES):
        hit = np.flatnonzero(full_run[a])
        if len(hit) == 0 or hit[0] == start:
            continue  # leaves the frame or runs into other texture: no boundary on this ray
        d = rho[hit[0]] - 0.25  # between the last inside and the first outside sample
        ys.append(cy + d * np.sin(th[a]))
        xs.append(cx + d * np.cos(th[a]))
    return np.asarray(ys), np.asarray(xs)


def boundary_circle(bmap: np.ndarray, cy: float, cx: float, r0: float
                     ) -> tuple[float, float, float] | None:
    """Circle fitted robustly to the outermost edges of the embryo on rays from (cy, cx)
    (:func:`_boundary_points`); rays that run into other texture (a well edge, debris) give
    outliers, which the fit rejects.
    """
    ys, xs = boundary_points(bmap, cy, cx, r0)
    if len(ys) < 8:
        return None
    return robust_circle_fit(np.asarray(ys), np.asarray(xs), min_points=8, rounds=4)


def robust_circle_fit(py: np.ndarray, px: np.ndarray, *, min_points: int, rounds: int
                      ) -> tuple[float, float, float]:
    """:func:`fit_circle` with iterative outlier rejection: points whose distance to the
    circle differs from the median by more than 2.5 robust SDs (at least 1 px) are dropped,
    up to ``rounds`` times, while at least ``min_points`` stay."""
    keep = np.ones(len(py), bool)
    fit = fit_circle(py, px)
    for _ in range(rounds):
        res = np.hypot(py - fit[0], px - fit[1]) - fit[2]
        mad = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
        new_keep = np.abs(res - np.median(res[keep])) <= max(2.5 * mad, 1.0)
        if new_keep.sum() < min_points or (new_keep == keep).all():
            break
        keep = new_keep
        fit = fit_circle(py[keep], px[keep])
    return fit


def outer_face(strong: np.ndarray, fit: tuple[float, float, float]
                ) -> tuple[float, float, float]:
    """Refit the circle to the strong edges only (the zona's outer face is a sharp line; the
    debris, cumulus and grainy medium around it are weaker texture). Kept only when it
    agrees with the first fit: centre within 15 % of the radius, radius 70-105 % of it."""
    cy, cx, r = fit
    ref = boundary_circle(strong, cy, cx, r)
    if ref is None or np.hypot(ref[0] - cy, ref[1] - cx) > 0.15 * r or \
            not _REFIT_MIN * r <= ref[2] <= 1.05 * r:
        return fit
    return ref


def circle_contrast(bmap: np.ndarray, cy: float, cx: float, r: float) -> float:
    """Filled fraction inside the circle minus the median (over sectors) of the ring outside.

    The median over angular sectors ignores a textured region touching the embryo on one
    side (the dark, rippled outside of a well edge, debris, text).
    """
    rho = np.arange(0.5, r * RING, 1.0)
    v, valid, _ = polar(bmap, cy, cx, rho)
    wgt = valid * rho[None, :]
    inside = rho < r
    n_in = wgt[:, inside].sum()
    if n_in < 0.5 * rho[inside].sum() * _ANGLES:
        return -1.0  # most of the disk lies outside the frame
    m_in = float((v * wgt)[:, inside].sum() / n_in)
    ring = ~inside
    sw = wgt[:, ring].reshape(_SECTORS, -1).sum(axis=1)
    sv = (v * wgt)[:, ring].reshape(_SECTORS, -1).sum(axis=1)
    full = rho[ring].sum() * _ANGLES / _SECTORS
    ok = sw > 0.5 * full
    m_ring = float(np.median(sv[ok] / sw[ok])) if ok.sum() >= 3 else 0.5
    return m_in - m_ring
