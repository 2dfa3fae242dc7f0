"""Random adherent cell bodies, their nuclei and their placement with a controlled overlap.

A cell outline is a closed smooth curve in polar form around its centre,

    r(t) = r_ellipse(t; a, b) * (1 + sum_k c_k cos(k t + p_k)) * prod_j (1 + l_j g_j(t)),

an elongated ellipse (semi-axes a > b) perturbed by a random Fourier series (k = 2..7, the
irregular outline) and by Gaussian bumps g_j in angle (lamellipodia and processes; a
negative l_j is an indentation); the long axis is then bent (banana-shaped cells). The
result is elongated and, with the bumps and the bend, not convex. The nucleus is an ellipse
centred deep inside the body (near the maximum of the distance transform) and small enough
to lie inside it.

Each cell is rasterised into its own patch (a :class:`CellPatch`) holding the amodal mask,
the nucleus mask and the cell's own contributions to the phase and absorbance images; the
frame is the sum of the patches (see :mod:`.optics`), so a patch can later be cut, warped
and pasted again (copy-paste, :mod:`.copy_paste`).

Overlap ratio (thesis section 4.4.1, interpreted): for a new cell with in-frame mask ``m``
and the union ``U`` of the cells placed before it, ``|m & U| / |m|``; a placement is
accepted if that ratio lies in the configured range and no cell placed before is covered
by more than the range's upper bound by the new one (so no cell disappears under another).
Nuclei never overlap each other. The first cell of a scene is exempt from the lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from blastoseg.synth.brightfield.config import BrightfieldConfig, Range


def uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


@dataclass
class CellPatch:
    """One cell in its own patch, placed at (y0, x0) of the frame (may be negative).

    Attributes
    ----------
    mask, nucleus
        (h, w) bool amodal cell mask and nucleus mask (nucleus inside the cell).
    phase
        (h, w) float32 phase delay (radians) that the cell adds to the frame.
    absorbance
        (h, w) float32 absorbance (natural log units) that the cell adds to the frame.
    """

    mask: np.ndarray
    nucleus: np.ndarray
    phase: np.ndarray
    absorbance: np.ndarray
    y0: int = 0
    x0: int = 0
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]

    def frame_slices(self, frame: tuple[int, int]) -> tuple[tuple[slice, slice],
                                                            tuple[slice, slice]] | None:
        """(frame slices, patch slices) of the part inside the frame; None if none is."""
        h, w = frame
        ph, pw = self.shape
        fy0, fx0 = max(0, self.y0), max(0, self.x0)
        fy1, fx1 = min(h, self.y0 + ph), min(w, self.x0 + pw)
        if fy1 <= fy0 or fx1 <= fx0:
            return None
        return ((slice(fy0, fy1), slice(fx0, fx1)),
                (slice(fy0 - self.y0, fy1 - self.y0), slice(fx0 - self.x0, fx1 - self.x0)))

    def frame_mask(self, frame: tuple[int, int], which: str = "mask") -> np.ndarray:
        """The patch's ``mask`` (or ``nucleus``) in frame coordinates, clipped."""
        out = np.zeros(frame, dtype=bool)
        sl = self.frame_slices(frame)
        if sl is not None:
            out[sl[0]] = getattr(self, which)[sl[1]]
        return out

    def add_to(self, frame: np.ndarray, which: str) -> None:
        """Add the patch's ``phase`` or ``absorbance`` into a frame image in place."""
        sl = self.frame_slices(frame.shape)
        if sl is not None:
            frame[sl[0]] += getattr(self, which)[sl[1]]

    def local_centre(self) -> np.ndarray:
        """(y, x) centroid of the mask in patch coordinates (cached)."""
        if "_centre" not in self.__dict__:
            ys, xs = np.nonzero(self.mask)
            self.__dict__["_centre"] = np.array([ys.mean(), xs.mean()])
        return self.__dict__["_centre"]

    def centre(self) -> np.ndarray:
        """(y, x) frame coordinates of the mask's centroid."""
        return self.local_centre() + np.array([self.y0, self.x0])


# --- shapes ---------------------------------------------------------------------------------

def random_outline(rng: np.random.Generator, config: BrightfieldConfig,
                   n_points: int = 160) -> np.ndarray:
    """(M, 2) closed outline (y, x) around the origin, in pixels, randomly oriented."""
    cfg = config
    a = 0.5 * uniform(rng, cfg.cell_length_px)
    b = a / uniform(rng, cfg.elongation)
    t = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
    r = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    if rng.random() < cfg.polygonal:
        # flat, angular cells (squamous / well-spread): a random polygon inscribed in the
        # ellipse, its corners rounded
        n = int(rng.integers(5, 10))
        vt = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * 2 * np.pi / n
        vt = np.sort(np.mod(vt + rng.uniform(0, 2 * np.pi), 2 * np.pi))
        vr = np.interp(vt, t, r, period=2 * np.pi) * rng.uniform(1.0, 1.15, n)
        r = ndi.gaussian_filter1d(polygon_radius(t, vt, vr), 2.0, mode="wrap")
    # irregular outline: random Fourier series, amplitudes decaying with the harmonic
    wobble = np.zeros_like(t)
    for k in range(2, 8):
        amp = rng.normal(0, cfg.irregularity / k**0.7)
        wobble += amp * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = r * (1.0 + wobble)
    # lamellipodia / processes (mostly at the ends of the long axis) and indentations
    for _ in range(int(round(uniform(rng, cfg.protrusions)))):
        if rng.random() < 0.6:
            centre = rng.choice([0.0, np.pi]) + rng.normal(0, 0.5)
        else:
            centre = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(0.15, 0.45)
        length = uniform(rng, cfg.protrusion_length)
        if rng.random() < 0.3:
            length = -0.5 * length  # an indentation
        d = np.angle(np.exp(1j * (t - centre)))
        r = r * (1.0 + length * np.exp(-0.5 * (d / width) ** 2))
    r = np.clip(r, 0.35 * b, None)
    x, y = r * np.cos(t), r * np.sin(t)
    # bend the long axis (banana / crescent shapes)
    y = y + uniform(rng, cfg.bend) * (x**2 / a) * rng.choice([-1.0, 1.0])
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    pts = np.stack([s * x + c * y, c * x - s * y], axis=1)
    return pts - pts.mean(axis=0)


def polygon_radius(t: np.ndarray, vt: np.ndarray, vr: np.ndarray) -> np.ndarray:
    """Distance from the origin to a star-shaped polygon (vertices at sorted angles ``vt``,
    radii ``vr``) along the directions ``t``."""
    n = len(vt)
    k = np.searchsorted(vt, np.mod(t, 2 * np.pi)) % n   # the vertex after each direction
    j = (k - 1) % n                                    # the vertex before it
    p1 = np.stack([vr[j] * np.cos(vt[j]), vr[j] * np.sin(vt[j])], axis=1)
    p2 = np.stack([vr[k] * np.cos(vt[k]), vr[k] * np.sin(vt[k])], axis=1)
    d = np.stack([np.cos(t), np.sin(t)], axis=1)
    e = p2 - p1
    num = p1[:, 0] * e[:, 1] - p1[:, 1] * e[:, 0]
    den = d[:, 0] * e[:, 1] - d[:, 1] * e[:, 0]
    return np.abs(num / np.where(np.abs(den) < 1e-9, 1e-9, den))


def rasterise_polygon(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool mask of the polygon with (y, x) vertices ``pts`` (PIL's scan-line fill: fast)."""
    from PIL import Image, ImageDraw

    img = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for y, x in pts], fill=1)
    return np.array(img, dtype=bool)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-8)


def make_cell(rng: np.random.Generator, config: BrightfieldConfig) -> CellPatch:
    """Sample one cell: outline, nucleus, thickness profile -> phase and absorbance patches.

    Optical path difference = thickness x refractive-index difference; the thickness rises
    from the outline over ``edge_width_px`` (a flat lamella), is largest around the nucleus
    and carries a granular texture; the nucleus adds an ellipsoidal dome.
    """
    cfg = config
    pts = random_outline(rng, cfg)
    pad = 3
    lo = np.floor(pts.min(axis=0)).astype(int) - pad
    hi = np.ceil(pts.max(axis=0)).astype(int) + pad
    shape = tuple(int(v) for v in hi - lo + 1)
    mask = ndi.binary_fill_holes(rasterise_polygon(pts - lo, shape))
    dist = ndi.distance_transform_edt(mask).astype(np.float32)

    # nucleus: centred near the deepest point of the body, small enough to stay inside
    deep = np.argwhere(dist >= 0.75 * dist.max())
    cy, cx = deep[rng.integers(len(deep))].astype(float)
    room = float(dist[int(cy), int(cx)])
    short = 2.0 * float(dist.max())  # width of the body at its widest
    rn = 0.5 * uniform(rng, cfg.nucleus_size) * short
    el = uniform(rng, cfg.nucleus_elongation)
    na, nb = rn * np.sqrt(el), rn / np.sqrt(el)
    if na > 0.8 * room:
        na, nb = 0.8 * room, nb * 0.8 * room / na
    na, nb = max(na, 1.5), max(nb, 1.2)
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / na
    v = (-np.sin(theta) * dx + np.cos(theta) * dy) / nb
    rho2 = u * u + v * v
    nucleus = (rho2 < 1.0) & (dist > 1.0)

    # thickness (micrometres): lamella rising from the edge, thicker around the nucleus
    edge = np.tanh(dist / uniform(rng, cfg.edge_width_px))
    extent = 0.5 * float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1]))  # mean box side
    reach = max(0.6 * short, 0.3 * extent)
    body = 0.3 + 0.7 * np.exp(-0.5 * (dy * dy + dx * dx) / reach**2)
    tex = uniform(rng, cfg.texture)
    texture = 1.0 + tex * (0.7 * smooth_noise(rng, shape, 1.2)
                           + 0.5 * smooth_noise(rng, shape, 4.0))
    t_cyto = uniform(rng, cfg.cell_thickness_um) * edge * body * np.clip(texture, 0.2, None)
    t_cyto = np.where(mask, t_cyto, 0.0)
    t_nuc = uniform(rng, cfg.nucleus_thickness_um) * np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    t_nuc = ndi.gaussian_filter(np.where(mask, t_nuc, 0.0), 0.7)
    # nucleoli: one to three small denser spots
    peak = 0.25 * float(t_nuc.max())
    for _ in range(int(rng.integers(1, 4))):
        oy, ox = rng.normal(0, 0.35, 2) * nb
        s = max(0.8, 0.18 * nb)
        t_nuc += peak * np.exp(-0.5 * ((dy - oy) ** 2 + (dx - ox) ** 2) / s**2) * nucleus

    k0 = 2 * np.pi / cfg.wavelength_um
    phase = k0 * (cfg.dn_cytoplasm * t_cyto + cfg.dn_nucleus * t_nuc)
    absorb = uniform(rng, cfg.absorption) * t_cyto + uniform(rng, cfg.nucleus_absorption) * t_nuc
    return CellPatch(
        mask=mask, nucleus=nucleus,
        phase=ndi.gaussian_filter(phase.astype(np.float32), 0.5),
        absorbance=ndi.gaussian_filter(absorb.astype(np.float32), 0.5),
        info={"nucleus_axes_px": [float(na), float(nb)]},
    )


# --- placement ------------------------------------------------------------------------------

class Placer:
    """Places cell patches one by one into a frame with a controlled overlap ratio."""

    def __init__(self, frame: tuple[int, int], config: BrightfieldConfig) -> None:
        self.frame = frame
        self.cfg = config
        self.coverage = np.zeros(frame, dtype=np.int32)
        self.nuclei = np.zeros(frame, dtype=bool)   # dilated nuclei placed so far
        self.placed: list[CellPatch] = []
        self.masks: list[np.ndarray] = []            # in-frame masks of placed cells
        self.areas: list[int] = []
        self.ratios: list[float] = []

    def _candidates(self, rng: np.random.Generator, patch: CellPatch) -> tuple[int, int]:
        h, w = self.frame
        ph, pw = patch.shape
        lo = self.cfg.overlap[0]
        if self.placed and (lo > 0 or rng.random() < 0.6):
            # next to a placed cell: centres about one cell radius apart
            other = self.placed[int(rng.integers(len(self.placed)))]
            r = 0.25 * (max(other.shape) + max(patch.shape))
            ang = rng.uniform(0, 2 * np.pi)
            dist = r * rng.uniform(0.6, 1.2)
            cy, cx = other.centre() + dist * np.array([np.sin(ang), np.cos(ang)])
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        my, mx = patch.local_centre()
        return int(round(cy - my)), int(round(cx - mx))

    def try_place(self, rng: np.random.Generator, patch: CellPatch) -> bool:
        """Place ``patch`` at a random valid position; False if none was found.

        A target ratio is drawn uniformly in the overlap range; the first valid position
        within a tolerance of it is taken, else the valid position closest to it (so the
        ratios spread over the whole range instead of piling up at 0).
        """
        lo, hi = self.cfg.overlap
        target = rng.uniform(lo, hi) if self.placed else 0.0
        tol = max(0.02, 0.25 * (hi - lo))
        total = int(patch.mask.sum())
        ring = ndi.binary_dilation(patch.nucleus, iterations=2)
        best: tuple[float, int, int, float] | None = None
        for _ in range(self.cfg.placement_tries):
            y0, x0 = patch.y0, patch.x0 = self._candidates(rng, patch)
            sl = patch.frame_slices(self.frame)
            if sl is None:
                continue
            m = patch.mask[sl[1]]
            inside = int(m.sum())
            if inside < max(8, (1.0 - self.cfg.max_outside) * total):
                continue
            if np.any(self.nuclei[sl[0]] & ring[sl[1]]):
                continue
            covered = int(np.count_nonzero(m & (self.coverage[sl[0]] > 0)))
            ratio = covered / inside
            if self.placed and not (lo <= ratio <= hi):
                continue
            if covered and any(
                    np.count_nonzero(old[sl[0]] & m) > hi * area
                    for old, area in zip(self.masks, self.areas, strict=True)):
                continue
            miss = abs(ratio - target)
            if best is None or miss < best[0]:
                best = (miss, y0, x0, ratio)
            if miss <= tol:
                break
        if best is None:
            return False
        _, patch.y0, patch.x0, ratio = best
        full = patch.frame_mask(self.frame)
        self.coverage += full
        self.nuclei |= patch.frame_mask(self.frame, "nucleus")
        self.placed.append(patch)
        self.masks.append(full)
        self.areas.append(int(full.sum()))
        self.ratios.append(ratio)
        return True
