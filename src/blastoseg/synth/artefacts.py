"""Everything in an incubator frame that is not a blastomere.

Zona pellucida, perivitelline fragments, cumulus-cell remnants and debris are optical path
maps in an "embryo canvas" (they move with the embryo); the culture-well edge, vignetting
and burned-in text are fixed to the camera frame.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blastoseg.synth.font import render_text
from blastoseg.synth.optics import add_patch, granules, smooth_noise, sphere_chord


def zona_opl(canvas: int, r_out: float, r_in: float, ellip: float, angle: float,
             rng: np.random.Generator, texture: float) -> tuple[np.ndarray, np.ndarray]:
    """Path length and absorption of the zona: a (slightly elliptical) spherical shell.

    Returns ``(opl_in_px, absorb)``; the caller multiplies the path by the index excess.
    """
    c = (canvas - 1) / 2.0
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) - c
    ca, sa = np.cos(angle), np.sin(angle)
    u = (ca * xx + sa * yy) / (1.0 + ellip)
    v = (-sa * xx + ca * yy) / (1.0 - ellip)
    chord = sphere_chord(u, v, r_out) - sphere_chord(u, v, r_in)
    # the zona is porous and layered: a denser inner layer and fibrous texture
    rr = np.sqrt(u * u + v * v)
    inner_layer = np.exp(-0.5 * ((rr - r_in - 0.25 * (r_out - r_in)) / (0.2 * (r_out - r_in))) ** 2)
    tex = 1.0 + texture * smooth_noise(rng, (canvas, canvas), 2.0)
    opl = chord * tex * (0.8 + 0.5 * inner_layer)
    # dark inner boundary line; the zona body itself scatters less than medium: lighter band
    absorb = 0.15 * np.exp(-0.5 * ((rr - r_in) / 1.2) ** 2) - 0.05 * chord / chord.max()  # thin dark inner boundary line
    return opl.astype(np.float32), absorb.astype(np.float32)


def blob(r: float, rng: np.random.Generator, grain: float, wobble: float = 0.15) -> np.ndarray:
    """Path length of a small irregular sphere (fragment, cumulus cell, debris)."""
    n = int(np.ceil(r * (1 + wobble))) + 2
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float32)
    phi = np.arctan2(yy, xx)
    rr = r * (1 + wobble * 0.5 * (np.cos(2 * phi + rng.uniform(0, 6.3))
                                  + 0.5 * np.cos(3 * phi + rng.uniform(0, 6.3))))
    t = 2.0 * np.sqrt(np.clip(rr**2 - xx**2 - yy**2, 0, None))
    if grain > 0 and r > 3:
        t = t * (1 + grain * granules(rng, t.shape, 1.0, 0.03))
    return t


def place_on_ring(rng: np.random.Generator, c: float, radius: float) -> tuple[float, float]:
    a = rng.uniform(0, 2 * np.pi)
    return c + radius * np.sin(a), c + radius * np.cos(a)


def fragments_opl(canvas: int, r_zona_in: float, n: int, px_um: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Anucleate fragments: small spheres in the perivitelline space."""
    out = np.zeros((canvas, canvas), np.float32)
    c = (canvas - 1) / 2.0
    for _ in range(n):
        r = rng.uniform(2.0, 7.0) / px_um
        y, x = place_on_ring(rng, c, rng.uniform(0.55, 0.95) * (r_zona_in - r))
        b = blob(r, rng, 0.15, 0.1)
        add_patch(out, b * rng.uniform(0.8, 1.3), int(y) - b.shape[0] // 2, int(x) - b.shape[1] // 2)
    return out


def cumulus_opl(canvas: int, r_zona_out: float, clusters: int, particles: int, px_um: float,
                rng: np.random.Generator) -> np.ndarray:
    """Cumulus-cell remnants stuck on the zona and loose debris around the embryo."""
    out = np.zeros((canvas, canvas), np.float32)
    c = (canvas - 1) / 2.0
    for _ in range(clusters):
        a0 = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(1, 7))):
            a = a0 + rng.normal(0, 0.08)
            r = rng.uniform(3.0, 7.0) / px_um
            rad = r_zona_out + rng.uniform(-0.5, 1.4) * r
            y, x = c + rad * np.sin(a), c + rad * np.cos(a)
            b = blob(r, rng, 0.35, 0.2) * rng.uniform(0.7, 1.2)
            add_patch(out, b, int(y) - b.shape[0] // 2, int(x) - b.shape[1] // 2)
    for _ in range(particles):
        r = rng.uniform(0.7, 3.0) / px_um
        y, x = place_on_ring(rng, c, rng.uniform(0.9, 1.0) * r_zona_out + rng.exponential(8) / px_um)
        b = blob(r, rng, 0.0, 0.25) * rng.uniform(0.6, 1.5)
        add_patch(out, b, int(y) - b.shape[0] // 2, int(x) - b.shape[1] // 2)
    return out


def well_edge(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The culture micro-well's edge: a bright crescent, darker beyond it.

    Returns a multiplicative illumination map and an additive relief term (grey levels
    per unit background) for the crescent.
    """
    h, w = shape
    s = min(h, w)
    ang = rng.uniform(0, 2 * np.pi)
    r_well = rng.uniform(0.55, 0.9) * s
    d_rim = rng.uniform(0.3, 0.6) * s  # distance from the frame centre to the rim
    cy = h / 2 + (d_rim - r_well) * np.sin(ang)
    cx = w / 2 + (d_rim - r_well) * np.cos(ang)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sd = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r_well  # > 0 outside the well
    width = rng.uniform(0.015, 0.045) * s
    rim = np.exp(-0.5 * (sd / width) ** 2) * rng.uniform(0.25, 0.7)
    outside = 1.0 / (1.0 + np.exp(-sd / (0.5 * width)))
    dark = rng.uniform(0.1, 0.4)
    illum = 1.0 - dark * outside
    ripple = 0.03 * smooth_noise(rng, shape, 0.01 * s + 1) * outside
    return illum.astype(np.float32), (rim + ripple).astype(np.float32)


def vignette(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Multiplicative radial fall-off around an off-centre optical axis."""
    h, w = shape
    cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (0.75 * max(h, w))
    return (1.0 - strength * np.clip(r, 0, 1.5) ** rng.uniform(1.8, 3.0)).astype(np.float32)


def burn_text(img: np.ndarray, lines: dict[str, str], scale: int, value: float,
              box: bool) -> np.ndarray:
    """Burn text into the corners. ``lines`` maps corner ('tl','tr','bl','br') to text."""
    h, w = img.shape
    m = max(2, 2 * scale)
    for corner, text in lines.items():
        bm = render_text(text, scale)
        bh, bw = bm.shape
        if bh + 2 * m > h or bw + 2 * m > w:
            continue
        y = m if corner[0] == "t" else h - bh - m
        x = m if corner[1] == "l" else w - bw - m
        if box:
            img[y - scale:y + bh + scale, x - scale:x + bw + scale] = 255.0 - value
        img[y:y + bh, x:x + bw][bm] = value
    return img


def soften(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(a, sigma) if sigma > 0.3 else a
