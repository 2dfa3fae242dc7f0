"""Cheap, classical localisation of the embryo (zona pellucida included) in a frame.

Real frames differ in magnification and framing: the embryo is off-centre, partly cut by the
micro-well's bright edge, dimmed by vignetting, with text burned into the corners. Before a
model sees a frame, the predictor finds the embryo, crops a square around it and rescales it
to the model's working resolution (:mod:`blastoseg.predict.framing`). Training uses exactly
the same step, so train and test framing match.

Method (no learning, ~5-15 ms at 500 x 500 on one CPU core):

1. grey, block-average to ~256 px on the short side, percentile-normalise;
2. divide by the low-frequency illumination (large Gaussian), which removes vignetting and
   the dark side of a well edge;
3. texture energy: squared difference-of-Gaussians at fine scale, smoothed; the embryo
   (granular cytoplasm, membranes, zona) is textured, the medium is smooth; the energy is
   log-compressed and clipped so that burned-in text or debris cannot dominate;
4. disk matching on a ~80 px grid: for every centre and a geometric ladder of radii, the
   mean energy inside the disk minus the mean energy in the ring just outside it (only
   in-frame pixels count, so an embryo cut by the frame border still scores), computed with
   FFT convolutions; the best (centre, radius) wins, then the radius is refined on a finer
   ladder around it.

The radius returned is that of the textured disk, i.e. the outer face of the zona.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from blastoseg.errors import InvalidImageError

__all__ = ["EmbryoBox", "choose_embryo_box", "locate_embryo"]

#: default tolerated radius range, as fractions of the frame's short side
MIN_RADIUS_FRAC = 0.15
MAX_RADIUS_FRAC = 0.60
#: the ring outside a candidate disk spans radius r .. RING * r
RING = 1.3
_GRID = 80        # short side of the disk-matching grid (px)
_TEXTURE = 256    # short side of the texture computation (px)
_THRESHOLD = 0.45  # on the normalised log edge energy (background ~0, edges ~1)


@dataclass(frozen=True)
class EmbryoBox:
    """Where the embryo is: a circle in pixel coordinates of the original frame.

    Attributes
    ----------
    cx, cy
        Centre (x = column, y = row), pixel units (pixel centres at integer coordinates).
    radius
        Radius in pixels (outer face of the zona pellucida).
    confidence
        0..1: contrast of texture inside vs just outside the circle; below ~0.2 the frame
        probably shows no embryo (or the embryo fills it) and the whole frame should be used.
    image_shape
        (H, W) of the frame it refers to.
    """

    cx: float
    cy: float
    radius: float
    confidence: float = 1.0
    image_shape: tuple[int, int] | None = None

    @classmethod
    def full_frame(cls, shape: tuple[int, int]) -> EmbryoBox:
        """The box that frames the whole image (its centre, half the long side), confidence 0."""
        h, w = int(shape[0]), int(shape[1])
        return cls(cx=(w - 1) / 2.0, cy=(h - 1) / 2.0, radius=max(h, w) / 2.0,
                   confidence=0.0, image_shape=(h, w))

    def xyxy(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """Square (x1, y1, x2, y2) in pixel edges around the circle, grown by ``margin`` x radius."""
        half = self.radius * (1.0 + margin)
        x0, y0 = self.cx + 0.5, self.cy + 0.5  # centre in pixel-edge coordinates
        return (x0 - half, y0 - half, x0 + half, y0 + half)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = None if self.image_shape is None else list(self.image_shape)
        return d


def _grey(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (2, 3, 4):
        a = a[..., 0] if a.shape[-1] == 2 else a[..., :3].astype(np.float32).mean(axis=-1)
    if a.ndim != 2:
        raise InvalidImageError(f"locate_embryo expects one 2D frame (H, W) or grey RGB "
                                f"(H, W, 3); got shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InvalidImageError("image contains NaN or infinite pixels; locate_embryo needs "
                                "finite values")
    return a


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return a
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _embryo_map(grey: np.ndarray) -> np.ndarray:
    """Binary 'not smooth medium' map at ~256 px: filled regions of high edge energy."""
    f = max(1, int(round(min(grey.shape) / _TEXTURE)))
    a = _block_mean(grey, f)
    lo, hi = np.percentile(a, (1.0, 99.0))
    a = (a - lo) / max(hi - lo, 1e-6)
    s = min(a.shape)
    # flatten the illumination (vignetting, the dark side of a well edge)
    illum = ndimage.gaussian_filter(a, s / 16.0, mode="nearest")
    a = a / np.maximum(illum, 0.05)
    # edge energy: membranes, the zona's faces and granules; the medium is smooth
    gm = ndimage.gaussian_gradient_magnitude(a, 1.0, mode="nearest")
    e = np.log(ndimage.gaussian_filter(gm * gm, 1.0, mode="nearest") + 1e-8)
    lo, hi = np.percentile(e, (10.0, 97.0))
    e = (e - lo) / max(hi - lo, 1e-6)
    b = e > _THRESHOLD
    k = max(1, int(round(s / 100)))
    b = ndimage.binary_closing(b, iterations=k, border_value=0)
    b = ndimage.binary_fill_holes(b)
    b = ndimage.binary_opening(b, iterations=2 * k)
    return b


def _resize_to(a: np.ndarray, short: int) -> np.ndarray:
    z = short / min(a.shape)
    if abs(z - 1.0) < 1e-3:
        return a
    return ndimage.zoom(a, z, order=1, mode="nearest", grid_mode=True)


@lru_cache(maxsize=16)
def _disk_spectra(shape: tuple[int, int], radii: tuple[float, ...]) -> tuple:
    """FFT spectra of disks on a padded grid plus the in-frame pixel count of each disk."""
    h, w = shape
    pad = int(np.ceil(max(radii))) + 1
    fh, fw = h + 2 * pad, w + 2 * pad
    yy = np.fft.fftfreq(fh, 1.0 / fh)[:, None]
    xx = np.fft.fftfreq(fw, 1.0 / fw)[None, :]
    d2 = yy * yy + xx * xx
    valid = np.zeros((fh, fw), np.float32)
    valid[:h, :w] = 1.0
    fv = np.fft.rfft2(valid)
    spectra, counts = [], []
    for r in radii:
        k = (d2 <= r * r).astype(np.float32)
        fk = np.fft.rfft2(k)
        spectra.append(fk)
        counts.append(np.fft.irfft2(fv * fk, s=(fh, fw))[:h, :w].astype(np.float32))
    return (fh, fw), spectra, counts


def _disk_means(t: np.ndarray, radii: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``t`` and in-frame pixel counts inside each disk, for every centre."""
    (fh, fw), spectra, counts = _disk_spectra(t.shape, radii)
    padded = np.zeros((fh, fw), np.float32)
    padded[: t.shape[0], : t.shape[1]] = t
    ft = np.fft.rfft2(padded)
    sums = np.stack([np.fft.irfft2(ft * fk, s=(fh, fw))[: t.shape[0], : t.shape[1]]
                     for fk in spectra])
    return sums, np.stack(counts)


def _scores(t: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Contrast (mean inside - mean in the ring outside) per radius and centre."""
    rings = radii * RING
    allr = tuple(float(v) for v in np.concatenate([radii, rings]))
    sums, counts = _disk_means(t, allr)
    n = len(radii)
    s_in, c_in = sums[:n], np.maximum(counts[:n], 1.0)
    s_ring = sums[n:] - sums[:n]
    c_ring = counts[n:] - counts[:n]
    m_in = s_in / c_in
    m_out = s_ring / np.maximum(c_ring, 1.0)
    # a ring that lies mostly outside the frame says little: shrink its evidence
    frac = c_ring / np.maximum(np.pi * (rings**2 - radii**2), 1.0)[:, None, None]
    m_out = np.where(frac > 0.15, m_out, np.maximum(m_out, 0.5))
    # the centre must lie inside the frame and most of the disk too
    disk_frac = c_in / (np.pi * radii**2)[:, None, None]
    return np.where(disk_frac > 0.5, m_in - m_out, -1.0)


def locate_embryo(image: np.ndarray, *, min_radius_frac: float = MIN_RADIUS_FRAC,
                  max_radius_frac: float = MAX_RADIUS_FRAC) -> EmbryoBox:
    """Find the embryo (zona included) in one frame.

    Parameters
    ----------
    image
        (H, W) frame of any real dtype, or (H, W, 3/4) grey-content RGB(A).
    min_radius_frac, max_radius_frac
        Radius range searched, as fractions of the frame's short side.

    Returns
    -------
    EmbryoBox
        Centre, radius (original pixel units) and a 0..1 confidence.

    Raises
    ------
    InvalidImageError
        Not a 2D frame, or NaN / infinite pixels.
    """
    grey = _grey(image)
    h, w = grey.shape
    if min(h, w) < 16:
        raise InvalidImageError(f"locate_embryo needs a frame of at least 16 x 16 pixels; got "
                                f"{h} x {w}")
    if not 0 < min_radius_frac < max_radius_frac:
        raise ValueError("need 0 < min_radius_frac < max_radius_frac")
    if float(grey.max() - grey.min()) <= 0:
        return EmbryoBox.full_frame((h, w))
    bmap = _embryo_map(grey)
    t = _resize_to(bmap.astype(np.float32), _GRID)
    g = min(t.shape)
    scale = min(h, w) / g  # original pixels per grid pixel

    # coarse: every centre of the grid, a geometric ladder of radii ~6 % apart
    n = max(8, int(np.ceil(np.log(max_radius_frac / min_radius_frac) / np.log(1.06))) + 1)
    radii = g * np.geomspace(min_radius_frac, max_radius_frac, n)
    score = _scores(t, radii)
    k, iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    best = score[k]
    dy = _parabola(best[max(iy - 1, 0), ix], best[iy, ix], best[min(iy + 1, t.shape[0] - 1), ix])
    dx = _parabola(best[iy, max(ix - 1, 0)], best[iy, ix], best[iy, min(ix + 1, t.shape[1] - 1)])
    # grid pixel centres -> original pixel coordinates (grid_mode zoom: edges align)
    cy = (iy + dy + 0.5) * h / t.shape[0] - 0.5
    cx = (ix + dx + 0.5) * w / t.shape[1] - 0.5
    # fine: the radius from the radial profile of the full-resolution map around that centre
    f = h / bmap.shape[0]
    lo = max(radii[k] * scale * 0.8, min_radius_frac * min(h, w) * 0.9)
    hi = min(radii[k] * scale * 1.25, max_radius_frac * min(h, w) * 1.1)
    radius, conf = _profile_radius(bmap, (cy - (f - 1) / 2) / f, (cx - (f - 1) / 2) / f,
                                   lo / f, hi / f)
    return EmbryoBox(cx=float(cx), cy=float(cy), radius=float(radius * f),
                     confidence=round(float(conf), 4), image_shape=(h, w))


def _profile_radius(bmap: np.ndarray, cy: float, cx: float, r_lo: float, r_hi: float
                    ) -> tuple[float, float]:
    """Radius in [r_lo, r_hi] with the best inside-vs-ring contrast of the map around (cy, cx)."""
    yy, xx = np.indices(bmap.shape, dtype=np.float32)
    d = np.hypot(yy - cy, xx - cx).ravel()
    step = 0.5
    nb = int(np.ceil(r_hi * RING / step)) + 2
    idx = np.minimum((d / step).astype(np.int64), nb - 1)
    filled = np.cumsum(np.bincount(idx, weights=bmap.ravel().astype(np.float64), minlength=nb))
    count = np.cumsum(np.bincount(idx, minlength=nb).astype(np.float64))
    rs = np.arange(max(1.0, r_lo), r_hi + step, step)
    i_in = np.minimum((rs / step).astype(int), nb - 2)
    i_out = np.minimum((rs * RING / step).astype(int), nb - 2)
    m_in = filled[i_in] / np.maximum(count[i_in], 1.0)
    n_ring = count[i_out] - count[i_in]
    m_ring = (filled[i_out] - filled[i_in]) / np.maximum(n_ring, 1.0)
    full = np.pi * ((rs * RING) ** 2 - rs**2)
    m_ring = np.where(n_ring > 0.15 * full, m_ring, np.maximum(m_ring, 0.5))
    contrast = m_in - m_ring
    j = int(np.argmax(contrast))
    return float(rs[j]), float(np.clip(contrast[j], 0.0, 1.0))


def _parabola(a: float, b: float, c: float) -> float:
    den = a - 2 * b + c
    if den >= 0:
        return 0.0
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


def choose_embryo_box(image: np.ndarray, *, use_localisation: bool = True,
                      min_confidence: float = 0.15) -> EmbryoBox:
    """The box a predictor (and training) frames the model's input with.

    ``locate_embryo`` when ``use_localisation`` and its confidence reaches
    ``min_confidence``; otherwise the whole frame (:meth:`EmbryoBox.full_frame`).
    """
    a = np.asarray(image)
    shape = a.shape[:2]
    if not use_localisation:
        return EmbryoBox.full_frame(shape)
    box = locate_embryo(a)
    if box.confidence < min_confidence:
        return EmbryoBox.full_frame(shape)
    return box
