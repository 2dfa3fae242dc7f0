"""Cheap, classical localisation of the embryo (zona pellucida included) in a frame.

Real frames differ in magnification and framing: the embryo is off-centre, partly cut by the
micro-well's bright edge, dimmed by vignetting, with text burned into the corners. Before a
model sees a frame, the predictor finds the embryo, crops a square around it and rescales it
to the model's working resolution (:mod:`blastoseg.predict.framing`). Training uses exactly
the same step, so train and test framing match.

Method (no learning; median 30-40 ms per 500 x 500 frame on a 2-core CPU):

1. grey, block-average to ~256 px on the short side, percentile-normalise; find the
   *usable* region (:mod:`blastoseg.predict.well`): inside a micro-well's bright rim or a
   dish edge's crescent, never the rim or the dark rippled outside; then divide by the
   low-frequency illumination (vignetting, the dark side of a well edge);
2. edge energy (smoothed squared gradient magnitude, log, scaled between its 10th and 97th
   percentiles over the usable region; zero outside it) thresholded: membranes, granules and
   the zona's faces are "on", the medium is "off"; closed, holes filled and opened, this
   gives a filled embryo map. A frame whose energy barely varies (blank, noise) has no
   embryo;
3. coarse disk matching on a ~80 px grid (FFT convolutions): for every centre and a
   geometric ladder of radii, the filled fraction inside the disk minus that of the ring
   out to 1.3 r (only in-frame pixels count, so an embryo cut by the frame still scores;
   beyond a well's rim counts as empty medium); up to three distinct maxima are kept;
4. per candidate, rays from its centre find where the first long run of smooth medium
   starts (the zona's outer face); a circle is fitted to those points with iterative
   outlier rejection (rays that run into debris); in incubator frames (a well or dish edge
   found) it is refitted on the strong edges only (the halo of debris and grainy medium
   around a zona there is weaker texture); the candidate
   whose circle has the best inside-vs-ring contrast (ring = median over angular sectors)
   wins, and that contrast is the confidence. Several strong, distinct circles: the most
   central one, with a note (see :class:`EmbryoBox`).

Measured on real frames with labelled circles: ``benchmarks/localise_benchmark.py`` and
docs/localisation.md.

The radius returned is that of the zona's outer face.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from blastoseg.errors import InvalidImageError
from blastoseg.io.frames import grey_frame
from blastoseg.predict.circle_fit import (
    RING,
    boundary_circle,
    circle_contrast,
    outer_face,
)
from blastoseg.predict.embryo_box import (
    CUT_BY_EDGE,
    DISAGREE,
    MANY_EMBRYOS,
    NO_EMBRYO,
    EmbryoBox,
)
from blastoseg.predict.well import usable_region
from blastoseg.predict.zona_edge import outer_face_circle

__all__ = ["DEFAULT_METHOD", "METHODS", "accept_box", "choose_embryo_box",
           "choose_embryo_box_and_guess", "locate_embryo"]

#: default tolerated radius range, as fractions of the frame's short side
MIN_RADIUS_FRAC = 0.15
MAX_RADIUS_FRAC = 0.60
_GRID = 80        # short side of the disk-matching grid (px)
_TEXTURE = 256    # short side of the texture computation (px)
_THRESHOLD = 0.45  # on the normalised log edge energy (background ~0, edges ~1)
_THRESHOLD_OUTER = 0.62  # the zona's outer face: stronger edges than the halo of debris
_SMOOTH = 1.0     # smoothing of the edge energy (map px)
#: spread (97th - 10th percentile) of the log edge energy below which a frame has no texture:
#: pure noise gives ~1.6, a smooth gradient ~0.6, every real and synthetic embryo frame > 5
_MIN_SPREAD = 3.0
_CLOSE = 0.02     # closing radius, fraction of the short side
#: a given diameter is searched within +-this fraction
DIAMETER_TOLERANCE = 0.12
#: "auto": the learned localiser and the classical one together (see :func:`_combine`);
#: "learned": CircleNet alone; "classical": steps 1-4 above alone
METHODS = ("auto", "learned", "classical")
DEFAULT_METHOD = "auto"
#: "auto": the two circles agree when the centres are this close and the classical radius in
#: this range (fractions of the learned radius)
AGREE_CENTRE = 0.25
AGREE_RADIUS = (0.6, 1.1)
#: below this heat-map peak the learned circle does not overrule a disagreeing classical one
#: (the peak was >= 0.71 on every real and synthetic embryo frame we measured)
LEARNED_SURE = 0.6


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return a
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _embryo_map(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Maps at ~256 px: the normalised edge energy (0 = medium, 1 = strong texture), its
    threshold closed, filled and opened (the filled embryo) and the usable region
    (:func:`~blastoseg.predict.well.usable_region`: inside a micro-well's rim).

    Map pixel (i, j) covers original pixels [i f, (i + 1) f) x [j f, (j + 1) f); the last
    factor returned is f.
    """
    f = max(1, int(round(min(grey.shape) / _TEXTURE)))
    a = _block_mean(grey, f)
    lo, hi = np.percentile(a, (1.0, 99.0))
    a = (a - lo) / max(hi - lo, 1e-6)
    usable = usable_region(a)
    # flatten the illumination (vignetting, the dark side of a well edge); the low-pass is
    # computed on a 4x coarser grid, which is ~10x cheaper than a wide Gaussian here
    small = _block_mean(a, 4)
    illum = ndimage.gaussian_filter(small, min(small.shape) / 16.0, mode="nearest")
    illum = np.repeat(np.repeat(illum, 4, axis=0), 4, axis=1)
    a = a[: illum.shape[0], : illum.shape[1]] / np.maximum(illum, 0.05)
    # edge energy: membranes, the zona's faces and granules; the medium is smooth
    gm = ndimage.gaussian_gradient_magnitude(a, 1.0, mode="nearest")
    e = np.log(ndimage.gaussian_filter(gm * gm, _SMOOTH, mode="nearest") + 1e-8)
    # a well's rim and its rippled outside are texture too: never part of the embryo, and
    # the threshold is set by the usable region alone (the smooth dark outside would lower it)
    usable = usable[: e.shape[0], : e.shape[1]]
    lo, hi = np.percentile(e[usable], (10.0, 97.0))
    if hi - lo < _MIN_SPREAD:
        # no texture worth the name (a blank or noise-only frame): nothing is "on"
        return np.zeros_like(e), np.zeros(e.shape, bool), usable, f
    e = np.where(usable, (e - lo) / max(hi - lo, 1e-6), 0.0)
    edges = e > _THRESHOLD
    k = max(1, int(round(min(a.shape) * _CLOSE)))
    b = ndimage.binary_closing(edges, iterations=k, border_value=0)
    b = ndimage.binary_fill_holes(b)
    b = ndimage.binary_opening(b, iterations=2 * k) & usable
    return e, b, usable, f


@lru_cache(maxsize=8)
def _disk_spectra(shape: tuple[int, int], radii: tuple[float, ...]) -> tuple:
    """FFT spectra of disks on a padded grid plus the in-frame pixel count of each disk."""
    h, w = shape
    pad = int(np.ceil(max(radii))) + 1
    fh, fw = sp_fft.next_fast_len(h + pad, real=True), sp_fft.next_fast_len(w + pad, real=True)
    yy = np.fft.fftfreq(fh, 1.0 / fh)[:, None]
    xx = np.fft.fftfreq(fw, 1.0 / fw)[None, :]
    d2 = yy * yy + xx * xx
    kernels = np.stack([(d2 <= r * r).astype(np.float32) for r in radii])
    spectra = sp_fft.rfft2(kernels)
    valid = np.zeros((fh, fw), np.float32)
    valid[:h, :w] = 1.0
    counts = sp_fft.irfft2(sp_fft.rfft2(valid)[None] * spectra, s=(fh, fw))[:, :h, :w]
    return (fh, fw), spectra, counts.astype(np.float32)


def _coarse_scores(t: np.ndarray, radii: np.ndarray, ring_steps: int) -> np.ndarray:
    """Mean of ``t`` inside each disk minus the mean in the ring out to ``radii[k + ring_steps]``.

    ``radii`` is a geometric ladder, so each ring's outer disk is another rung of it; only
    in-frame pixels count. Returns (len(radii) - ring_steps, H, W).
    """
    (fh, fw), spectra, counts = _disk_spectra(t.shape, tuple(float(r) for r in radii))
    padded = np.zeros((fh, fw), np.float32)
    padded[: t.shape[0], : t.shape[1]] = t
    sums = sp_fft.irfft2(sp_fft.rfft2(padded)[None] * spectra, s=(fh, fw))
    sums = sums[:, : t.shape[0], : t.shape[1]]
    n = len(radii) - ring_steps
    c_in = np.maximum(counts[:n], 1.0)
    m_in = sums[:n] / c_in
    c_ring = counts[ring_steps:] - counts[:n]
    m_out = (sums[ring_steps:] - sums[:n]) / np.maximum(c_ring, 1.0)
    r_in, r_out = radii[:n], radii[ring_steps:]
    # a ring that lies mostly outside the frame says little: do not let it look empty
    frac = c_ring / np.maximum(np.pi * (r_out**2 - r_in**2), 1.0)[:, None, None]
    m_out = np.where(frac > 0.15, m_out, np.maximum(m_out, 0.5))
    # most of the disk must lie inside the frame
    disk_frac = c_in / (np.pi * r_in**2)[:, None, None]
    return np.where(disk_frac > 0.5, m_in - m_out, -1.0)


def _candidates(score: np.ndarray, radii: np.ndarray, k: int) -> list[tuple[float, float, float]]:
    """Up to ``k`` distinct (y, x, r) maxima of the coarse score, grid units."""
    best = score.max(axis=0)
    which = score.argmax(axis=0)
    yy, xx = np.indices(best.shape)
    out: list[tuple[float, float, float]] = []
    top = float(best.max())
    work = best.copy()
    for _ in range(k):
        iy, ix = np.unravel_index(int(np.argmax(work)), work.shape)
        v = float(work[iy, ix])
        if v <= 0 or (out and v < 0.5 * top):
            break
        r = float(radii[which[iy, ix]])
        out.append((float(iy), float(ix), r))
        work[(yy - iy) ** 2 + (xx - ix) ** 2 <= (0.5 * r) ** 2] = -np.inf
    return out


_SEVERAL = 0.8   # another embryo: a distinct circle with this share of the best contrast
_MIN_CONTRAST = 0.15  # a circle with less contrast is no embryo (choose_embryo_box's default)
_CUT = 0.15      # cut: the circle leaves the frame by more than this x r


def _choose(fits: list[tuple[float, float, float, float]], shape: tuple[int, int],
            r_floor: float = 0.0) -> tuple[float, float, float, float, str]:
    """The circle to frame among (contrast, cy, cx, r) fits, and a note for the user.

    Several embryos (distinct circles, each with a real contrast close to the best): the most
    central one, so that a dish with neighbours at its edges frames the one in the middle.
    Circles at the smallest radius searched (``r_floor``) are blobs, not embryos: they never
    count as another embryo.
    """
    fits = sorted(fits, key=lambda x: -x[0])
    best = fits[0]
    strong = [best]
    for c in fits[1:]:
        # two embryos are two (nearly) disjoint circles of similar size; a cluster of cells
        # inside one embryo overlaps its circle, a clump of debris beside it is much smaller
        if c[0] >= max(_MIN_CONTRAST, _SEVERAL * best[0]) and c[3] > 1.01 * r_floor and all(
                np.hypot(c[1] - o[1], c[2] - o[2]) > 0.9 * (c[3] + o[3])
                and max(c[3], o[3]) <= 1.5 * min(c[3], o[3]) for o in strong):
            strong.append(c)
    note = ""
    if len(strong) > 1:
        h, w = shape
        best = min(strong, key=lambda x: np.hypot(x[1] - (h - 1) / 2, x[2] - (w - 1) / 2))
        note = f"{len(strong)} {MANY_EMBRYOS}: framed the most central one"
    conf, cy, cx, r = best
    h, w = shape
    if _cut_by_edge((h, w), cx, cy, r):
        note = f"{note}; {CUT_BY_EDGE}" if note else CUT_BY_EDGE
    return conf, cy, cx, r, note


def _cut_by_edge(shape: tuple[int, int], cx: float, cy: float, r: float) -> bool:
    """The circle leaves the frame by more than _CUT x r."""
    h, w = shape
    return min(cy + 0.5, cx + 0.5, h - 0.5 - cy, w - 0.5 - cx) < (1 - _CUT) * r


def locate_embryo(image: np.ndarray, *, min_radius_frac: float = MIN_RADIUS_FRAC,
                  max_radius_frac: float = MAX_RADIUS_FRAC,
                  radius_px: float | None = None, method: str = DEFAULT_METHOD,
                  model: str | None = None) -> EmbryoBox:
    """Find the embryo (zona included) in one frame.

    Parameters
    ----------
    image
        (H, W) frame of any real dtype, or (H, W, 3/4) grey-content RGB(A).
    min_radius_frac, max_radius_frac
        Radius range searched by the classical method, as fractions of the frame's short side.
    radius_px
        The embryo's radius when the user knows it (from a diameter, in pixels): only
        radii within +-12 % of it are searched (classical), and the box's source is
        "diameter".
    method
        "auto" (default), "learned" or "classical"; see :data:`METHODS` and
        docs/localisation.md for what each does and how well.
    model
        The learned localiser (registered name, .safetensors or job folder); None: the
        shipped ``localiser-default``.

    Returns
    -------
    EmbryoBox
        Centre, radius (original pixel units) and a 0..1 confidence.

    Raises
    ------
    InvalidImageError
        Not a 2D frame, or NaN / infinite pixels.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    grey = grey_frame(image, min_side=1)
    h, w = grey.shape
    if min(h, w) < 16:
        raise InvalidImageError(f"locate_embryo needs a frame of at least 16 x 16 pixels; got "
                                f"{h} x {w}")
    classical, in_well = _locate_classical(grey, min_radius_frac, max_radius_frac, radius_px)
    if method == "classical" or radius_px is not None or not classical.found:
        # a user's diameter fixes the scale, which is what the learned half adds; a frame
        # without texture (blank, noise) has no embryo whatever a network says
        return classical if radius_px is not None or in_well else _to_outer_face(grey, classical)
    from blastoseg.predict.learned_localiser import learned_circle

    cx, cy, r, conf = learned_circle(grey, model)
    learned = _learned_box(grey.shape, cx, cy, r, conf, classical)
    if method == "learned":
        chosen = learned
    elif MANY_EMBRYOS in classical.note:
        # CircleNet finds one embryo, the most embryo-like; with several in view the
        # documented outcome is the most central one, which the classical stage chose
        chosen = classical
    else:
        chosen = _combine(classical, learned)
    return chosen if in_well else _to_outer_face(grey, chosen)


def _to_outer_face(grey: np.ndarray, box: EmbryoBox) -> EmbryoBox:
    """``box`` moved onto the zona's outer face (:mod:`blastoseg.predict.zona_edge`) where
    the rays show one; frames with a micro-well keep their circle (see there why)."""
    if not box.found:
        return box
    fit = outer_face_circle(grey, box.cx, box.cy, box.radius)
    if fit is None:
        return box
    cx, cy, r = fit
    h, w = grey.shape
    notes = [n for n in box.note.split("; ") if n and n != CUT_BY_EDGE]
    if _cut_by_edge((h, w), cx, cy, r):
        notes.append(CUT_BY_EDGE)
    return EmbryoBox(**{**box.to_dict(), "cx": cx, "cy": cy, "radius": r,
                        "image_shape": box.image_shape, "note": "; ".join(notes),
                        "method": f"{box.method} + outer face"})


def _learned_box(shape: tuple[int, int], cx: float, cy: float, r: float, conf: float,
                 classical: EmbryoBox) -> EmbryoBox:
    h, w = shape
    notes = [n for n in classical.note.split("; ") if MANY_EMBRYOS in n]
    if _cut_by_edge((h, w), cx, cy, r):
        notes.append(CUT_BY_EDGE)
    return EmbryoBox(cx=float(cx), cy=float(cy), radius=float(r),
                     confidence=round(float(conf), 4), image_shape=(h, w), source="localised",
                     note="; ".join(notes), method="learned")


def _locate_classical(grey: np.ndarray, min_radius_frac: float, max_radius_frac: float,
                      radius_px: float | None) -> tuple[EmbryoBox, bool]:
    """Steps 1-4 of the module docstring on a grey frame; also whether the frame shows a
    micro-well's rim or a dish edge."""
    h, w = grey.shape
    if radius_px is not None:
        if not (np.isfinite(radius_px) and radius_px > 0):
            raise ValueError(f"the embryo radius must be a positive number of pixels; got "
                             f"{radius_px}")
        min_radius_frac = radius_px * (1 - DIAMETER_TOLERANCE) / min(h, w)
        max_radius_frac = radius_px * (1 + DIAMETER_TOLERANCE) / min(h, w)
    if not 0 < min_radius_frac < max_radius_frac:
        raise ValueError("need 0 < min_radius_frac < max_radius_frac")
    if float(grey.max() - grey.min()) <= 0:
        return EmbryoBox.full_frame((h, w), note=NO_EMBRYO), False
    energy, bmap, usable, f = _embryo_map(grey)
    edges = (energy > _THRESHOLD).astype(np.float32)
    # incubator frames (a well or dish edge found) have a halo of grainy medium and debris
    # around the zona; in microscope crops the zona's outer face is itself faint, and a
    # strong-edge refit would land inside it (measured: docs/localisation.md)
    in_well = not usable.all()
    strong = (energy > _THRESHOLD_OUTER).astype(np.float32) if in_well else None
    bmap = bmap.astype(np.float32)
    # beyond a well's rim the maps are 0, so the well's outside counts as empty medium: an
    # embryo lies inside its well, and the rim can never look like a zona
    fg = max(1, int(round(min(bmap.shape) / _GRID)))
    t = _block_mean(bmap, fg)
    gy = gx = float(fg)  # map px per grid px
    g = min(t.shape)

    # coarse: every centre of the grid, a geometric ladder of radii; the ring of rung k
    # reaches rung k + ring_steps (RING = ratio ** ring_steps)
    ring_steps = 4
    ratio = RING ** (1.0 / ring_steps)
    n = int(np.ceil(np.log(max_radius_frac / min_radius_frac) / np.log(ratio))) + 1
    radii = g * min_radius_frac * ratio ** np.arange(n + ring_steps)
    score = _coarse_scores(t, radii, ring_steps)
    cands = _candidates(score, radii[:n], 3)
    if not cands:
        return EmbryoBox.full_frame((h, w), note=NO_EMBRYO), in_well

    # fine: robust circle fit to the boundary of the filled region, per candidate; the one
    # with the best inside-vs-ring contrast wins
    fits = []
    short = min(bmap.shape)
    for iy, ix, r in cands:
        cy0, cx0, r0 = (iy + 0.5) * gy - 0.5, (ix + 0.5) * gx - 0.5, r * min(gy, gx)
        fit = boundary_circle(edges, cy0, cx0, r0)
        if fit is None or not (0.6 * r0 <= fit[2] <= 1.5 * r0) or \
                np.hypot(fit[0] - cy0, fit[1] - cx0) > 0.5 * r0:
            fit = (cy0, cx0, r0)
        if in_well:
            fit = outer_face(strong, fit)
        fit = (fit[0], fit[1], float(np.clip(fit[2], 0.9 * min_radius_frac * short,
                                             1.1 * max_radius_frac * short)))
        fits.append((circle_contrast(bmap, *fit), *fit))
    conf, cy, cx, r, note = _choose(fits, bmap.shape, 0.9 * min_radius_frac * short)
    return EmbryoBox(cx=float((cx + 0.5) * f - 0.5), cy=float((cy + 0.5) * f - 0.5),
                     radius=float(r * f), confidence=round(float(max(conf, 0.0)), 4),
                     image_shape=(h, w),
                     source="localised" if radius_px is None else "diameter", note=note,
                     method="classical"), in_well


def _combine(classical: EmbryoBox, learned: EmbryoBox) -> EmbryoBox:
    """The "auto" localiser. Where the two circles agree (centres within AGREE_CENTRE x r,
    radii within AGREE_RADIUS of the learned one), the smaller one: both methods fail by
    drawing too large a circle (the classical one into the halo of debris and grainy medium
    around a zona, the learned one on embryos unlike its synthetic training frames, e.g.
    expanded blastocysts; docs/localisation.md). Where they disagree, the learned one: the
    classical method can take debris, a well's shadow or a cluster of cells for the embryo,
    and the network was trained to find the embryo in exactly such frames - unless its heat
    map's peak is below LEARNED_SURE (it is unsure what the embryo is: a frame unlike any it
    was trained on), when the classical circle stays; either way the box's note says that
    they disagree, which makes it unsure (the widget shows it as a guess and asks)."""
    r = learned.radius
    agree = (np.hypot(classical.cx - learned.cx, classical.cy - learned.cy) < AGREE_CENTRE * r
             and AGREE_RADIUS[0] * r <= classical.radius <= AGREE_RADIUS[1] * r)
    if agree:
        chosen, why = ((classical, "classical (smaller, agrees with learned)")
                       if classical.radius < learned.radius
                       else (learned, "learned (smaller, agrees with classical)"))
        note = chosen.note
    else:
        chosen, why = ((learned, "learned (classical disagreed)")
                       if learned.confidence >= LEARNED_SURE
                       else (classical, "classical (learned unsure)"))
        note = f"{chosen.note}; {DISAGREE}" if chosen.note else DISAGREE
    return EmbryoBox(**{**chosen.to_dict(), "image_shape": chosen.image_shape, "note": note,
                        "method": f"auto: {why}"})


def choose_embryo_box(image: np.ndarray, *, use_localisation: bool = True,
                      min_confidence: float = 0.15,
                      embryo: EmbryoBox | tuple[float, float, float] | None = None,
                      diameter_px: float | None = None, method: str = DEFAULT_METHOD,
                      model: str | None = None) -> EmbryoBox:
    """The box a predictor (and training) frames the model's input with.

    In order: ``embryo`` (a user's circle, EmbryoBox or (cx, cy, r)) when given; the whole
    frame when ``use_localisation`` is False (frames that are already crops);
    ``locate_embryo`` (with the radius fixed to ``diameter_px / 2`` when given; ``method``
    and ``model`` as there) when its confidence reaches ``min_confidence``; otherwise the
    whole frame (:meth:`EmbryoBox.full_frame`, source "whole frame": no embryo found).
    """
    return choose_embryo_box_and_guess(
        image, use_localisation=use_localisation, min_confidence=min_confidence,
        embryo=embryo, diameter_px=diameter_px, method=method, model=model)[0]


def choose_embryo_box_and_guess(image: np.ndarray, *, use_localisation: bool = True,
                                min_confidence: float = 0.15,
                                embryo: EmbryoBox | tuple[float, float, float] | None = None,
                                diameter_px: float | None = None,
                                method: str = DEFAULT_METHOD, model: str | None = None
                                ) -> tuple[EmbryoBox, EmbryoBox | None]:
    """(:func:`choose_embryo_box`'s box, the localiser's own box when it ran, else None).
    When the confidence is too low the box is the whole frame and the second is the guess
    to show the user: the localiser runs once for both (the learned one is a network)."""
    a = np.asarray(image)
    shape = a.shape[:2]
    if embryo is not None:
        if isinstance(embryo, EmbryoBox):
            return (embryo if embryo.image_shape is not None else EmbryoBox(
                **{**embryo.to_dict(), "image_shape": tuple(shape)})), None
        return EmbryoBox.from_circle(*embryo, image_shape=shape), None
    if not use_localisation:
        return EmbryoBox.full_frame(shape), None
    box = locate_embryo(a, radius_px=None if diameter_px is None else diameter_px / 2.0,
                        method=method, model=model)
    return accept_box(box, shape, min_confidence)


def accept_box(box: EmbryoBox, shape: tuple[int, int], min_confidence: float
               ) -> tuple[EmbryoBox, EmbryoBox]:
    """(the box to frame with, the localiser's box): the whole frame ("no embryo found") when
    the localiser's ``box`` is below ``min_confidence``, else ``box`` itself."""
    if box.confidence < min_confidence:
        return EmbryoBox.full_frame(tuple(shape[:2]), note=NO_EMBRYO), box
    return box, box
