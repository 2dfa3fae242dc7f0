"""Relief-contrast image formation (Hoffman modulation contrast / DIC-like).

The specimen is described by two maps: the optical path excess ``opl`` (thickness times
refractive-index excess, summed over everything along the optical axis) and a small
absorption ``absorb``. A relief-contrast microscope shows approximately

    I = background * (1 - absorb) + gain * d(opl)/ds

where ``d/ds`` is the derivative along the shear direction: edges facing one way are bright,
the other way dark, which gives the 3D shaded look, and overlapping translucent cells add
their path lengths, so every outline shows through.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-8)


def granules(rng: np.random.Generator, shape: tuple[int, int], size: float,
             density: float) -> np.ndarray:
    """Granular cytoplasm: fine smooth noise plus sparse bright/dark granules, unit scale."""
    fine = smooth_noise(rng, shape, max(0.6, 0.5 * size))
    dots = (rng.random(shape) < density).astype(np.float32) * rng.choice(
        [-1.0, 1.0], size=shape).astype(np.float32)
    dots = ndi.gaussian_filter(dots, max(0.7, 0.6 * size)) * (6.0 * size)
    coarse = smooth_noise(rng, shape, 3.0 * size)
    return 0.6 * fine + 0.5 * dots + 0.3 * coarse


def sphere_chord(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Thickness along z of a sphere of radius ``r`` at offsets (dx, dy)."""
    return 2.0 * np.sqrt(np.clip(r * r - dx * dx - dy * dy, 0.0, None))


def add_patch(dst: np.ndarray, src: np.ndarray, y0: int, x0: int) -> None:
    """Add ``src`` into ``dst`` at (y0, x0), clipping at the borders."""
    h, w = dst.shape
    sy0, sx0 = max(0, -y0), max(0, -x0)
    dy0, dx0 = max(0, y0), max(0, x0)
    dy1 = min(h, y0 + src.shape[0])
    dx1 = min(w, x0 + src.shape[1])
    if dy1 <= dy0 or dx1 <= dx0:
        return
    dst[dy0:dy1, dx0:dx1] += src[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]


def blurred_patch(patch: np.ndarray, sigma: float) -> tuple[np.ndarray, int]:
    """Pad a patch by 3 sigma and blur it; returns the blurred patch and the pad width."""
    if sigma < 0.3:
        return patch, 0
    pad = int(np.ceil(3 * sigma))
    big = np.pad(patch, pad)
    return ndi.gaussian_filter(big, sigma), pad


def directional_derivative(opl: np.ndarray, angle: float) -> np.ndarray:
    """Central-difference derivative of ``opl`` along the shear direction ``angle`` (rad)."""
    gy, gx = np.gradient(opl)
    return np.cos(angle) * gx + np.sin(angle) * gy


def relief_image(opl: np.ndarray, absorb: np.ndarray, angle: float, gain: float,
                 background: float, halo_sigma: float, halo: float) -> np.ndarray:
    """Form the relief-contrast intensity from path-length and absorption maps.

    ``halo`` adds a weak low-pass term of the derivative, mimicking the broad shading that
    the modulator slit gives around large objects.
    """
    d = directional_derivative(opl, angle)
    if halo != 0:
        d = d + halo * ndi.gaussian_filter(d, halo_sigma)
    return background * (1.0 - absorb) + gain * d


def sensor_noise(img: np.ndarray, rng: np.random.Generator, read_sigma: float,
                 shot: float) -> np.ndarray:
    """Gaussian read noise plus signal-dependent shot noise (grey levels)."""
    sd = np.sqrt(read_sigma**2 + shot * np.clip(img, 0, None))
    return img + sd * rng.standard_normal(img.shape).astype(np.float32)
