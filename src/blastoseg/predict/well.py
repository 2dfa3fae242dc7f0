"""Where in a frame an embryo can be: the culture medium inside a micro-well or dish.

Incubator frames (EmbryoScope-type) show the embryo inside a micro-well whose bright rim is a
full or partial ring two to three times the embryo's diameter, with a dark, rippled outside;
other incubators show the bright crescent of a dish edge. Both are strongly textured, so a
texture-based localiser takes the rim for the zona and frames the well. This module finds the
*usable* region - the medium the embryo lies in - so the localiser (:mod:`.localise`) only
looks there and treats the rest like the outside of the frame.

Method, on a frame already block-averaged and percentile-normalised to [0, 1]:

1. smooth it over ~1.5 % of the short side (the embryo's texture averages out, the rim and
   the dark outside do not);
2. the medium level is a high percentile of the smoothed frame's middle range; pixels below
   ``_DARK`` x that level are dark (outside a well, a dish's shadow), pixels far above it
   are rim (a saturated rim or crescent);
3. only large parts count: dark parts touching the border, bright parts that are long (a ring
   or crescent, not a refractile spot); both are grown by ~2 % of the short side (the rim's
   inner gradient is strong texture);
4. the usable region is the largest connected part of the rest, holes filled.

A frame without a well or dish edge (a microscope crop, an embryo filling the frame) has no
large dark or rim parts, and the whole frame is usable.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from blastoseg.predict.circle_fit import fit_circle

__all__ = ["usable_region"]

_SMOOTH = 0.015   # smoothing, fraction of the short side
_DARK = 0.45      # dark: below this fraction of the medium level
_BRIGHT = 0.45    # rim: above medium + this fraction of (top - medium)
_MIN_CONTRAST = 0.2  # rim only when the top is this much above the medium (normalised units)
_DARK_AREA = 0.03    # a dark part must cover this fraction of the frame
_RIM_EXTENT = 0.35   # a rim part must span this fraction of the short side
_GROW = 0.02      # invalid parts grow by this fraction of the short side
_RIM_WIDTH = 0.06    # a thin bright part: mean width below this fraction of the short side
_MIN_WELL = 0.2      # a well's radius is at least this fraction of the short side


def _touches_border(sl: tuple[slice, slice], shape: tuple[int, int]) -> bool:
    return sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == shape[0] or \
        sl[1].stop == shape[1]


_RIM_ANGLES = 72
_RIM_END = 0.3    # the rim ends (inwards) where brightness falls below medium + this x (top - medium)


def _rim_inner_radii(s: np.ndarray, cy: float, cx: float, r: float, level: float
                     ) -> np.ndarray:
    """Per direction around the well's centre, the radius where the rim's brightness ends.

    Scans inwards from the fitted circle over at most 30 % of its radius: past dark samples
    (the fit can sit on the dark outside), through the bright rim, to the first sample below
    ``level``; a direction without a rim keeps r, one that stays bright (the embryo's own
    bright face at the rim) gets r - 0.3 r.
    """
    th = (np.arange(_RIM_ANGLES) + 0.5) / _RIM_ANGLES * 2 * np.pi - np.pi
    rho = np.arange(r, 0.7 * r, -1.0)
    y = np.clip(np.rint(cy + rho[None, :] * np.sin(th)[:, None]), 0, s.shape[0] - 1)
    x = np.clip(np.rint(cx + rho[None, :] * np.cos(th)[:, None]), 0, s.shape[1] - 1)
    v = s[y.astype(np.intp), x.astype(np.intp)]
    bright = v >= level
    # inwards: past the dark outside (if the fit sits on it), through the rim, to the medium
    start = np.where(bright.any(axis=1), bright.argmax(axis=1), 0)
    idx = np.arange(len(rho))[None, :]
    below = ~bright & (idx > start[:, None])
    first = np.where(below.any(axis=1), below.argmax(axis=1), len(rho) - 1)
    first = np.where(bright.any(axis=1), first, 0)  # no rim in this direction: the circle
    # a few directions crossing a bright part of the embryo must not cut into it
    return ndimage.median_filter(rho[first], size=11, mode="wrap")


def _well_circle(invalid: np.ndarray) -> tuple[float, float, float] | None:
    """The circle of the well's rim, fitted to the inner boundary of the dark and rim parts.

    The inner boundary is where the invalid parts meet the rest, seen from the frame's
    usable bulk (the point farthest from any invalid pixel); points on the frame's border
    are not boundary. Returns None when the fit is poor or the circle is not a well (a
    radius below a third of the short side).
    """
    h, w = invalid.shape
    dist = ndimage.distance_transform_edt(~invalid)
    iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
    # boundary pixels of the invalid parts: invalid, with a valid 4-neighbour
    edge = invalid & ndimage.binary_dilation(~invalid)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = False
    py, px = np.nonzero(edge)
    if len(py) < 20:
        return None
    # keep, per angle around the bulk's centre, the nearest boundary point (the inner face)
    ang = np.round(np.arctan2(py - iy, px - ix) / (2 * np.pi) * 180).astype(int) % 180
    d = np.hypot(py - iy, px - ix)
    order = np.lexsort((d, ang))
    first = np.ones(len(order), bool)
    first[1:] = ang[order][1:] != ang[order][:-1]
    sel = order[first]
    py, px = py[sel].astype(float), px[sel].astype(float)
    if len(py) < 12:
        return None
    keep = np.ones(len(py), bool)
    fit = fit_circle(py, px)
    for _ in range(5):
        res = np.hypot(py - fit[0], px - fit[1]) - fit[2]
        new = np.abs(res) <= max(2.5 * 1.4826 * np.median(np.abs(res[keep])), 2.0)
        if new.sum() < 12 or (new == keep).all():
            break
        keep = new
        fit = fit_circle(py[keep], px[keep])
    cy, cx, r = fit
    if r < _MIN_WELL * min(h, w) or keep.mean() < 0.5 or not (0 <= cy < h and 0 <= cx < w):
        return None
    return fit


def usable_region(a: np.ndarray) -> np.ndarray:
    """Boolean map of the medium an embryo can lie in (True) for a normalised frame ``a``.

    ``a`` is one 2D float frame scaled so that its 1st / 99th percentiles are ~0 / ~1.
    """
    h, w = a.shape
    short = min(h, w)
    s = ndimage.gaussian_filter(a, max(1.0, _SMOOTH * short), mode="nearest")
    # the medium's level: when the frame splits into a dark and a bright population (a
    # well's outside vs its inside, which can be the larger part), the bright one's median
    t = threshold_otsu(s)
    lo_part, hi_part = s[s <= t], s[s > t]
    medium = float(np.median(s))
    if lo_part.size and hi_part.size and np.median(lo_part) < 0.5 * np.median(hi_part):
        medium = float(np.median(hi_part))
    top = float(np.percentile(s, 99.5))
    invalid = np.zeros_like(s, dtype=bool)

    # the outside's ripples average out over a wider window
    wide = ndimage.gaussian_filter(a, max(1.0, 2 * _SMOOTH * short), mode="nearest")
    dark = wide < _DARK * medium
    if dark.any():
        lab, n = ndimage.label(dark)
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        sizes = ndimage.sum_labels(dark, lab, index=np.arange(1, n + 1))
        keep = [i + 1 for i in range(n) if sizes[i] >= _DARK_AREA * h * w
                and (i + 1) in border]
        invalid |= np.isin(lab, keep)

    if top - medium > _MIN_CONTRAST:
        # a rim is bright and long, and either borders the dark outside (a micro-well) or is
        # a dish edge's crescent; a bright broad region is medium, not rim
        bright = s > medium + _BRIGHT * (top - medium)
        near_dark = ndimage.binary_dilation(invalid, iterations=max(1, int(0.04 * short)))
        lab, n = ndimage.label(bright)
        for i, sl in enumerate(ndimage.find_objects(lab)):
            if sl is None:
                continue
            part = lab[sl] == i + 1
            extent = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
            if extent < _RIM_EXTENT * short:
                continue
            # a dish edge's crescent is thin, long and runs off the frame; a bright zona is
            # thin too, but a closed ring inside the frame
            crescent = (extent >= 2 * _RIM_EXTENT * short and _touches_border(sl, s.shape)
                        and ndimage.distance_transform_edt(part).max()
                        < 0.5 * _RIM_WIDTH * short)
            if crescent or (near_dark[sl] & part).any():
                invalid[sl] |= part

    if not invalid.any():
        return np.ones_like(s, dtype=bool)
    well = _well_circle(invalid)
    grow = max(1, int(round(_GROW * short)))
    invalid = ndimage.binary_dilation(invalid, iterations=grow)
    if well is not None:
        # everything beyond the rim's inner face (the rim, ripples, the dark outside) is not
        # usable; the inner face is found per direction, since a rim is often bright on one
        # side and faint on the other
        cy, cx, r = well
        yy, xx = np.indices(s.shape)
        rho = np.hypot(yy - cy, xx - cx)
        ang = ((np.arctan2(yy - cy, xx - cx) + np.pi) / (2 * np.pi) * _RIM_ANGLES).astype(int)
        inner = _rim_inner_radii(s, cy, cx, r, medium + _RIM_END * (top - medium))
        invalid |= rho > inner[np.clip(ang, 0, _RIM_ANGLES - 1)] - grow
    rest = ~invalid
    lab, n = ndimage.label(rest)
    if n == 0:
        return np.ones_like(s, dtype=bool)  # nothing left: do not restrict at all
    sizes = ndimage.sum_labels(rest, lab, index=np.arange(1, n + 1))
    usable = lab == int(np.argmax(sizes)) + 1
    if usable.sum() < 0.05 * h * w:
        return np.ones_like(s, dtype=bool)
    return ndimage.binary_fill_holes(usable)
