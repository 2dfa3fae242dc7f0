"""The "wide" appearance: domain randomisation beyond the default look.

Real frames differ between clinics, incubators and cameras far more than the default ranges
of :class:`~blastoseg.synth.config.EmbryoConfig` do: blastomeres look solid and granular
(EmbryoScope) or coarse and dark (inverted microscopes) rather than glassy, they press into
each other with flat contact faces, the relief can be strong or faint, the membrane lines
dark or bright (the focus on either side of the cells), images are gamma-mapped, blurred,
noisy and JPEG-compressed. With ``appearance="wide"`` each embryo draws a :class:`Look` from
these wider ranges; the default appearance never touches this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass
class Look:
    """Per-embryo draws of the wide appearance (scene attributes it overrides, and finishing)."""

    scene: dict            # Scene attribute -> value (optics and packing knobs)
    z_squash: float        # container's z semi-axis / its x-y radius (1 = spherical)
    contact_faces: bool    # clip blastomeres at flat contact faces (volume-preserving)
    lumpy: float           # weight of a coarse, lumpy cytoplasm texture
    lumpy_size: float      # its scale (px at 500 px)
    membrane_sign: float   # +1 dark membrane lines, -1 bright (focus above the cells)
    gamma: float
    jpeg_quality: int | None


def _lu(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform draw."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_look(rng: np.random.Generator, size_scale: float) -> Look:
    """Draw one embryo's look; ``size_scale`` = pixels per pixel-at-500 (frame / 500)."""
    u = rng.uniform
    scene = {
        "gain": u(220.0, 800.0),
        "gran": u(0.15, 0.7),
        "gran_size": u(0.8, 3.0) * max(size_scale, 0.5),
        "mem_dark": u(0.1, 0.6),
        "mem_w": u(0.9, 2.4),
        "cyto_abs": _lu(rng, 0.1, 0.6),
        "nuc_c": u(0.1, 0.5),
        "depth_blur": u(2.0, 8.0),
        "defocus": _lu(rng, 0.35, 2.5),
        "halo": u(-0.4, 1.2),
        "under_w": u(0.2, 0.8),
        "bg": u(90.0, 200.0),
        "read_noise": _lu(rng, 0.8, 9.0),
        "shot": u(0.01, 0.15),
        "allowed_overlap": u(0.1, 0.3),
        "compression": u(0.15, 0.6),
    }
    return Look(
        scene=scene,
        z_squash=u(0.85, 1.05),
        contact_faces=bool(rng.random() < 0.85),
        lumpy=u(0.0, 0.8),
        lumpy_size=u(2.0, 6.0) * max(size_scale, 0.5),
        membrane_sign=-1.0 if rng.random() < 0.25 else 1.0,
        gamma=float(np.clip(np.exp(rng.normal(0.0, 0.25)), 0.6, 1.7)),
        jpeg_quality=int(rng.integers(25, 92)) if rng.random() < 0.5 else None,
    )


def apply_gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma-map grey levels (0-255 scale), keeping black and white fixed."""
    if abs(gamma - 1.0) < 1e-3:
        return img
    return 255.0 * (np.clip(img, 0.0, 255.0) / 255.0) ** gamma


def jpeg(image: np.ndarray, quality: int | None) -> np.ndarray:
    """Round-trip a uint8 image through JPEG at ``quality`` (None: unchanged)."""
    if quality is None:
        return image
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L")).copy()
