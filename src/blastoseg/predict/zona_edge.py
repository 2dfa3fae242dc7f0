"""The last step of embryo localisation in frames without a micro-well: move the circle onto
the zona pellucida's outer face.

Why: in microscope and time-lapse crops the zona is a smooth band, 10-20 % of the radius
wide, whose texture is well below that of the cells; the coarse localiser
(:mod:`blastoseg.predict.localise`) thresholds texture and so stops at the zona's *inner*
face (measured on the real time-lapse crops: radius 15 % short, 3 of 8 frames within 10 %).
The zona band is still more textured than the medium around it. So, on rays from the coarse
centre, the outer face is where the fine gradient falls to the medium's level and stays
there; the circle fitted robustly to those points is the answer.

Method (full-resolution grey frame, circle (cx, cy, r0) from the coarse localiser):

1. gradient magnitude at sigma max(1, r0 / 100) px of the percentile-normalised frame,
   sampled on 128 rays over 0.5 r0 .. 1.6 r0, smoothed along each ray over 0.03 r0;
2. the medium's level b: the median over rays of each ray's median in 1.3 r0 .. 1.6 r0;
3. on each ray, the first sample beyond 0.75 r0 where a run of at least RUN x r0 below
   K x b starts; then the steepest point within PEAK x r0 inside it (the edge itself, not
   the end of its blur);
4. a circle fitted to those points with iterative outlier rejection (debris, cumulus, a
   neighbouring embryo); kept only when its centre moved at most 0.2 r0 and its radius is
   0.8-1.3 r0, otherwise the coarse circle stays.

K, RUN and PEAK were chosen on 160 synthetic frames (80 crops of ``s13_default``, 80 mixed
frames of ``s13_val``: the setting with the most frames within 10 %), before the real frames
were scored. In micro-well frames the grainy medium and the rim's glow around the embryo
break step 2, and the refinement made EmbryoScope frames worse (41 -> 14 % within 10 %), so
the localiser does not apply it there. Measured: docs/localisation.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from blastoseg.predict.circle_fit import robust_circle_fit

__all__ = ["K", "PEAK", "RUN", "outer_face_circle"]

K = 2.0      # "medium" = gradient below K x the medium's level
RUN = 0.12   # the medium must go on for this fraction of the radius
PEAK = 0.05  # the edge is the steepest point this far inside where the medium starts
_ANGLES = 128
_START = 0.75        # never look inside this fraction of the coarse radius
_BACKGROUND = (1.3, 1.6)  # where the medium's level is measured, fractions of r0
_MIN_POINTS = 24     # of 128 rays; fewer (the frame cuts most rays) keeps the coarse circle


def _rays(gm: np.ndarray, cx: float, cy: float, rho: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    th = np.linspace(0, 2 * np.pi, _ANGLES, endpoint=False)
    y = cy + rho[None, :] * np.sin(th)[:, None]
    x = cx + rho[None, :] * np.cos(th)[:, None]
    h, w = gm.shape
    inside = (y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)
    values = ndimage.map_coordinates(gm, [y, x], order=1, mode="nearest")
    return values, inside, th


def outer_face_circle(grey: np.ndarray, cx: float, cy: float, r0: float
                      ) -> tuple[float, float, float] | None:
    """(cx, cy, r) of the zona's outer face near the coarse circle (cx, cy, r0) in a 2D grey
    frame (original pixel units), or None where the rays do not show one (the coarse circle
    should stay)."""
    if not (np.isfinite(r0) and r0 >= 8):
        return None
    g = np.asarray(grey, np.float32)
    h, w = g.shape
    sigma = max(1.0, r0 / 100.0)
    # only the window the rays cover (plus the filter's reach) is filtered: on a large frame
    # the gradient of the whole frame costs far more than the rest of the localiser
    reach = _BACKGROUND[1] * r0 + 4 * sigma + 2
    y0, x0 = max(int(cy - reach), 0), max(int(cx - reach), 0)
    y1, x1 = min(int(np.ceil(cy + reach)) + 1, h), min(int(np.ceil(cx + reach)) + 1, w)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return None
    window = g[y0:y1, x0:x1]
    lo, hi = np.percentile(window, (1.0, 99.0))
    gm = ndimage.gaussian_gradient_magnitude((window - lo) / max(float(hi - lo), 1e-6), sigma)
    step = max(0.5, r0 / 200.0)
    rho = np.arange(0.5 * r0, _BACKGROUND[1] * r0, step)
    v, inside, th = _rays(gm, cx - x0, cy - y0, rho)
    v = ndimage.uniform_filter1d(v, max(1, int(round(0.03 * r0 / step))), axis=1)
    ring = rho >= _BACKGROUND[0] * r0
    levels = [np.median(v[a][ring & inside[a]]) for a in range(_ANGLES)
              if (ring & inside[a]).sum() > 5]
    if len(levels) < _ANGLES // 8:
        return None  # the medium is out of frame: nothing to compare the zona with
    quiet = (v < K * float(np.median(levels))) | ~inside
    n = len(rho)
    run = max(3, int(round(RUN * r0 / step)))
    cs = np.concatenate([np.zeros((_ANGLES, 1)), np.cumsum(quiet, axis=1)], axis=1)
    idx = np.arange(n)
    ends = np.minimum(idx + run, n)
    starts_run = (cs[:, ends] - cs[:, :n]) >= (ends - idx) - 0.5
    starts_run &= (ends - idx >= run)[None, :]
    first = int(np.searchsorted(rho, _START * r0))
    starts_run[:, :first] = False
    back = max(1, int(round(PEAK * r0 / step)))
    ys, xs = [], []
    for a in range(_ANGLES):
        hit = np.flatnonzero(starts_run[a])
        if len(hit) == 0 or hit[0] == first or not inside[a, hit[0]]:
            continue  # no medium on this ray, or it was quiet from the start, or off-frame
        j0 = max(first, hit[0] - back)
        j = j0 + int(np.argmax(v[a, j0:hit[0] + 1]))
        ys.append(cy + rho[j] * np.sin(th[a]))
        xs.append(cx + rho[j] * np.cos(th[a]))
    if len(ys) < _MIN_POINTS:
        return None
    fy, fx, fr = robust_circle_fit(np.asarray(ys), np.asarray(xs),
                                   min_points=_MIN_POINTS // 2, rounds=5)
    if np.hypot(fy - cy, fx - cx) > 0.2 * r0 or not 0.8 * r0 <= fr <= 1.3 * r0:
        return None
    return float(fx), float(fy), float(fr)
