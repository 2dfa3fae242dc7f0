"""Complete a partly drawn or partly visible cell into a full amodal mask.

:func:`complete_shape` works in three steps:

1. **Ellipse guess.** Only part of the partial mask's outline is the cell's real edge; the
   rest is where another cell hides it (or the frame border). The real edge is taken as
   the outline pixels next to known background when the ``hidden`` region is given (pixels
   outside both the partial mask and ``hidden`` are known background), else the outline
   pixels on the mask's convex hull (a cell hidden by a convex neighbour loses a concave
   bite). A least-squares circle through those pixels, or an ellipse
   (:func:`~blastoseg.annotate.shapes.ellipse_from_points`) where it fits them clearly
   better, united with the partial mask, is the first guess.
2. **Shape prior.** The guess is cropped to its box and resampled to the VQ-VAE's S x S
   exactly as its training crops were (:func:`~blastoseg.train.shape_prior_data.crop_mask`),
   encoded, quantised to the nearest codes and decoded; the decoded mask, pasted back,
   is a shape the prior knows. The box is re-estimated from it and the projection repeated
   until the box settles (at most ``n_iter`` times).
3. **Constraints.** The result always contains every pixel of the partial mask (the user's
   pixels are never removed) and, with ``hidden``, never enters known background.

Measured on synthetic embryos (``benchmarks/shape_completion.py``, docs/labeling.md): the
ellipse step gives nearly all of the gain; the prior mostly keeps the shape as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from blastoseg.annotate.shapes import (
    Ellipse,
    circle_from_points,
    ellipse_from_points,
    ellipse_mask,
)
from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.models.vqvae import VQVAE

__all__ = ["complete_shape", "edge_points", "ellipse_guess", "load_prior"]

DEFAULT_PRIOR = "shape-prior-default"
#: (gain, margin in px) with and without the hidden region: the fitted ellipse replaces
#: the circle only when the circle's RMS distance to the edge pixels exceeds gain x the
#: ellipse's + margin (pixel steps alone leave about 0.3 px). Without the hidden region the
#: convex-hull edge pixels include stray pixels of the cut, so the ellipse must win by far.
#: Chosen on the seeds 20000.. of benchmarks/shape_completion.py, checked on 30000..
ELLIPSE_TEST = {True: (1.2, 0.1), False: (5.0, 0.5)}


@functools.lru_cache(maxsize=2)
def _cached_prior(name: str, device: str) -> VQVAE:
    from blastoseg.train.amodal_task import load_shape_prior

    return load_shape_prior(name).to(device)


def load_prior(shape_prior: str | VQVAE = DEFAULT_PRIOR, device: str = "cpu") -> VQVAE:
    """A frozen VQ-VAE shape prior on ``device``: a registered name or ``.safetensors``
    path (loaded once and cached), or a VQVAE instance (used as it is)."""
    if isinstance(shape_prior, VQVAE):
        return shape_prior
    from blastoseg.predict.device import resolve_device

    return _cached_prior(str(shape_prior), str(resolve_device(device)))


def _box_of(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def edge_points(partial: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
    """(K, 2) (y, x) outline pixels of ``partial`` taken to be the cell's real edge.

    With ``hidden``: outline pixels next to known background (outside ``partial | hidden``).
    Without: outline pixels within one pixel of the mask's convex hull. Pixels on the
    frame border are never taken (the frame cuts the cell there, it is no edge).
    """
    m = np.asarray(partial, dtype=bool)
    outline = m & ~ndimage.binary_erosion(m)
    edge = outline.copy()
    edge[[0, -1], :] = False
    edge[:, [0, -1]] = False
    if hidden is not None:
        background = ~(m | hidden)
        edge &= ndimage.binary_dilation(background, structure=np.ones((3, 3), bool))
        return np.argwhere(edge).astype(np.float64)
    pts = np.argwhere(edge).astype(np.float64)
    if len(pts) < 3:
        return pts
    try:  # the outline (frame border included) has the mask's convex hull
        hull = ConvexHull(np.argwhere(outline).astype(np.float64))
    except QhullError:  # all pixels on one line
        return pts
    # distance inside a convex polygon to its outline: the smallest distance to a facet
    depth = -(pts @ hull.equations[:, :2].T + hull.equations[:, 2]).max(axis=1)
    return pts[depth <= 1.0]


def ellipse_guess(partial: np.ndarray, hidden: np.ndarray | None = None,
                  min_ratio: float = 0.5) -> Ellipse | None:
    """The circle or ellipse through the real-edge pixels of ``partial`` (see
    :func:`edge_points`); None when they are too few or the fit is implausible (it misses
    most of the mask).

    A circle is fitted first; an ellipse replaces it only when it fits the edge clearly
    better (:data:`ELLIPSE_TEST`) and is not flatter than ``min_ratio`` (minor / major
    axis): a short arc is fitted almost as well by many ellipses (a flatter, shifted one
    hugs a half circle), and the circle extrapolates it far more reliably.
    """
    m = np.asarray(partial, dtype=bool)
    pts = edge_points(m, hidden)
    if len(pts) < 3:
        return None
    try:
        c = circle_from_points(pts)
    except BlastosegError:
        return None
    e = c
    if len(pts) >= 5:
        el = ellipse_from_points(pts)
        rms_c = float(np.sqrt(np.mean(c.radial_distance(pts) ** 2)))
        rms_e = float(np.sqrt(np.mean(el.radial_distance(pts) ** 2)))
        gain, margin = ELLIPSE_TEST[hidden is not None]
        if el.axes[1] >= min_ratio * el.axes[0] and rms_c > gain * rms_e + margin:
            e = el
    # outline pixel centres lie half a pixel inside the cell's outline
    e = Ellipse(e.center, (e.axes[0] + 0.5, e.axes[1] + 0.5), e.angle)
    h, w = m.shape
    if e.axes[0] > 2.0 * np.hypot(h, w):
        return None  # a nearly straight edge: no usable curvature
    inside = ellipse_mask(m.shape, e.center, e.axes, e.angle)
    if (inside & m).sum() < 0.5 * m.sum():
        return None
    return e


def _project(vq: VQVAE, mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Encode -> quantise -> decode ``mask`` inside ``box``; (H, W) float probabilities
    pasted back (0 outside the box)."""
    from blastoseg.train.shape_prior_data import crop_mask

    s = vq.config.mask_size
    h, w = mask.shape
    x0, y0, x1, y1 = box
    # only the box (plus a pixel for the bilinear samples) is resampled
    r0, r1 = max(0, int(np.floor(y0)) - 1), min(h, int(np.ceil(y1)) + 1)
    c0, c1 = max(0, int(np.floor(x0)) - 1), min(w, int(np.ceil(x1)) + 1)
    local = box - np.array([c0, r0, c0, r0], dtype=np.float64)
    crop = crop_mask(mask[r0:r1, c0:c1], local, s)[None, None].float()
    p = next(vq.parameters())
    with torch.no_grad():
        logits = vq.decode_indices(vq.encode_indices(crop.to(p.device, p.dtype)))
    prob = torch.sigmoid(logits)[0, 0].float().cpu().numpy()
    # the crop's pixel u samples the box at edge coordinate x0 + (u + 0.5) * width / S
    # (roi_align, aligned=True); invert that for the frame's pixel centres i + 0.5
    out = np.zeros((h, w), dtype=np.float32)
    r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))
    c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))
    if r1 <= r0 or c1 <= c0:
        return out
    uu = (np.arange(r0, r1) + 0.5 - y0) * s / (y1 - y0) - 0.5
    vv = (np.arange(c0, c1) + 0.5 - x0) * s / (x1 - x0) - 0.5
    grid = np.meshgrid(uu, vv, indexing="ij")
    out[r0:r1, c0:c1] = ndimage.map_coordinates(prob, grid, order=1, mode="nearest")
    return out


def complete_shape(partial_mask: np.ndarray, shape_prior: str | VQVAE | None = DEFAULT_PRIOR,
                   device: str = "cpu", box: Sequence[float] | None = None, *,
                   hidden: np.ndarray | None = None, n_iter: int = 3) -> np.ndarray:
    """Propose the full amodal mask of a cell from a partial mask of it.

    Parameters
    ----------
    partial_mask
        (H, W) bool: the part of the cell that is drawn or visible (e.g. the visible mask
        of an occluded cell, or a few strokes along its visible edge filled in).
    shape_prior
        VQ-VAE shape prior: registered name, ``.safetensors`` path or a loaded VQVAE;
        None skips the prior (the ellipse guess alone).
    device
        Where the prior runs ("cpu", "cuda", "auto", ...); it is tiny, CPU is fast.
    box
        Optional XYXY box (pixel edges, x2/y2 exclusive) of the whole cell if it is known
        (e.g. dragged by the user). The first guess is then the ellipse inscribed in it
        united with the partial mask, instead of a fitted ellipse.
    hidden
        Optional (H, W) bool: where the hidden part of the cell may lie, typically the
        union of the other cells' amodal masks. Pixels outside it and outside the partial
        mask are known background: they tell which outline pixels are the cell's real edge,
        and the result never covers them. Strongly recommended (see docs/labeling.md).
    n_iter
        At most this many prior projections (each re-estimates the box).

    Returns
    -------
    np.ndarray
        (H, W) bool amodal mask; it contains every pixel of ``partial_mask``.

    Raises
    ------
    InvalidImageError
        The mask is not 2D, is empty, or ``hidden`` / ``box`` do not fit it.
    """
    m = np.asarray(partial_mask)
    if m.ndim != 2:
        raise InvalidImageError(f"partial_mask must be an (H, W) mask; got shape {m.shape}")
    m = m.astype(bool)
    if not m.any():
        raise InvalidImageError("partial_mask is empty: draw or select part of the cell first")
    allowed = None
    if hidden is not None:
        hid = np.asarray(hidden)
        if hid.shape != m.shape:
            raise InvalidImageError(f"hidden must have the mask's shape {m.shape}; "
                                    f"got {hid.shape}")
        hid = hid.astype(bool)
        allowed = m | hid
    guess = m.copy()
    if box is not None:
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
            raise InvalidImageError(f"box must be (x1, y1, x2, y2) with x2 > x1, y2 > y1; "
                                    f"got {box!r}")
        center = ((b[1] + b[3]) / 2 - 0.5, (b[0] + b[2]) / 2 - 0.5)
        guess |= ellipse_mask(m.shape, center, ((b[2] - b[0]) / 2, (b[3] - b[1]) / 2))
    else:
        e = ellipse_guess(m, None if allowed is None else hid)
        if e is not None:
            guess |= e.mask(m.shape)
    if allowed is not None:
        guess &= allowed
    if shape_prior is None:
        return guess
    vq = load_prior(shape_prior, device)
    cur, cur_box = guess, _box_of(guess)
    for _ in range(max(int(n_iter), 0)):
        new = _project(vq, cur, cur_box) >= 0.5
        if allowed is not None:
            new &= allowed
        new |= m
        new_box = _box_of(new)
        cur = new
        if np.abs(new_box - cur_box).max() <= 1.0:
            break
        cur_box = new_box
    return cur
