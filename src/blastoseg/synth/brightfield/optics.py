"""Brightfield image formation of thin, nearly transparent cells (weak-phase / TIE model).

The specimen is two maps in the image plane: the phase delay ``phi`` (radians) and the
absorbance ``A`` (natural-log units). Each cell adds ``phi = k0 * dn * t`` (thickness ``t``
times its refractive-index excess ``dn``, ``k0 = 2 pi / wavelength``) and ``A = mu * t``;
overlapping cells ADD in both maps (they are stacked along the optical axis).

In focus, brightfield shows only the absorption, ``I = I0 exp(-A)``: a transparent cell is
nearly invisible. Away from focus the transport-of-intensity equation,
``dI/dz = -(1/k0) div(I grad phi)``, gives to first order in ``z``

    I(z) ~ I0 exp(-A) (1 - (z / k0) laplacian(phi)),

(the ``grad A . grad phi`` cross term is dropped: absorption is weak). A cell (a phase bump,
concave inside, convex just outside its edge) is bright inside a dark rim on one side of
focus (z > 0) and dark inside a bright rim on the other (z < 0): the two planes have
opposite contrast. We write ``1 - x`` as ``exp(-x)`` so strong edges never go negative, and
blur each plane with a Gaussian whose width grows with ``|z|`` (the spread of the defocused
point-spread function that the first-order term leaves out). Then a smooth uneven
illumination ``I0(x, y)``, shot noise (Poisson, Gaussian approximation) and read noise.

Simplifications: no coherence / condenser aperture model, no spherical aberration, no
halo or multiple scattering; the two planes share one illumination field (with a small
per-plane gain difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from blastoseg.synth.brightfield.cells import smooth_noise, uniform
from blastoseg.synth.brightfield.config import BrightfieldConfig


@dataclass
class Optics:
    """Microscope and camera settings of one scene (sampled by :func:`sample_optics`)."""

    defocus_um: tuple[float, float]   # signed z of plane 0 (below focus) and plane 1 (above)
    phase_strength: float
    blur_px: tuple[float, float]
    background: float                 # grey level of the empty slide
    illumination: np.ndarray          # (H, W) relative field, mean ~1
    plane_gain: tuple[float, float]
    photons: float
    read_noise: float
    pixel_size_um: float
    wavelength_um: float

    def meta(self) -> dict:
        """JSON-able summary (without the illumination field)."""
        return {
            "defocus_um": [round(float(z), 4) for z in self.defocus_um],
            "phase_strength": float(self.phase_strength),
            "blur_px": [float(b) for b in self.blur_px],
            "background_level": float(self.background),
            "photons": float(self.photons),
            "read_noise": float(self.read_noise),
            "wavelength_um": float(self.wavelength_um),
        }


def sample_optics(rng: np.random.Generator, config: BrightfieldConfig,
                  shape: tuple[int, int]) -> Optics:
    """Draw one scene's defocus, illumination and camera settings."""
    cfg = config
    z0 = -uniform(rng, cfg.defocus_um[0])
    z1 = uniform(rng, cfg.defocus_um[1])
    blur = tuple(float(np.hypot(cfg.focus_blur_um, cfg.defocus_blur * abs(z)))
                 / cfg.pixel_size_um for z in (z0, z1))
    h, w = shape
    # uneven illumination: a random smooth quadratic surface, scaled to +-variation
    yy = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    g = rng.normal(0, 1, 5)
    field = g[0] * yy + g[1] * xx + 0.6 * (g[2] * yy * yy + g[3] * xx * xx + g[4] * xx * yy)
    field = field / (np.abs(field).max() + 1e-8)
    illum = 1.0 + uniform(rng, cfg.illumination_variation) * field
    return Optics(
        defocus_um=(z0, z1),
        phase_strength=uniform(rng, cfg.phase_strength),
        blur_px=blur,  # type: ignore[arg-type]
        background=uniform(rng, cfg.background_level),
        illumination=illum.astype(np.float32),
        plane_gain=(1.0 + rng.normal(0, 0.015), 1.0 + rng.normal(0, 0.015)),
        photons=uniform(rng, cfg.photons),
        read_noise=uniform(rng, cfg.read_noise),
        pixel_size_um=cfg.pixel_size_um,
        wavelength_um=cfg.wavelength_um,
    )


def background_layers(rng: np.random.Generator, config: BrightfieldConfig,
                      shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Phase and absorbance of the slide itself: faint texture plus small debris specks."""
    phase = 0.01 * smooth_noise(rng, shape, 2.0)
    absorb = np.zeros(shape, np.float32)
    n = int(round(uniform(rng, config.debris)))
    if n:
        dots = np.zeros(shape, np.float32)
        ys = rng.integers(0, shape[0], n)
        xs = rng.integers(0, shape[1], n)
        dots[ys, xs] = rng.uniform(1.0, 4.0, n)
        dots = ndi.gaussian_filter(dots, rng.uniform(0.7, 1.2))
        absorb += 0.5 * dots
        phase += 0.2 * dots
    return phase.astype(np.float32), absorb


def tie_intensity(phase: np.ndarray, absorbance: np.ndarray, z_um: float, pixel_size_um: float,
                  wavelength_um: float, strength: float = 1.0) -> np.ndarray:
    """Relative intensity ``exp(-A) exp(-(z / k0) laplacian(phi))`` at defocus ``z_um``."""
    k0 = 2 * np.pi / wavelength_um
    lap = ndi.laplace(phase.astype(np.float32), mode="nearest") / pixel_size_um**2
    term = strength * (z_um / k0) * lap
    term = 1.5 * np.tanh(term / 1.5)  # soft limit: strong edges saturate, never explode
    return np.exp(-absorbance - term).astype(np.float32)


def form_planes(phase: np.ndarray, absorbance: np.ndarray, optics: Optics,
                rng: np.random.Generator) -> np.ndarray:
    """The two defocused brightfield planes, float32 (2, H, W) in grey levels (uint16 range)."""
    out = np.empty((2, *phase.shape), dtype=np.float32)
    for p, z in enumerate(optics.defocus_um):
        rel = tie_intensity(phase, absorbance, z, optics.pixel_size_um, optics.wavelength_um,
                            optics.phase_strength)
        rel = ndi.gaussian_filter(rel, optics.blur_px[p], mode="nearest")
        img = optics.background * optics.plane_gain[p] * optics.illumination * rel
        out[p] = camera_noise(img, rng, optics.background / optics.photons, optics.read_noise)
    return out


def camera_noise(img: np.ndarray, rng: np.random.Generator, grey_per_electron: float,
                 read_noise: float) -> np.ndarray:
    """Shot noise (Gaussian approximation of Poisson) plus Gaussian read noise."""
    sd = np.sqrt(grey_per_electron * np.clip(img, 0, None) + read_noise**2)
    return (img + sd * rng.standard_normal(img.shape, dtype=np.float32)).astype(np.float32)
