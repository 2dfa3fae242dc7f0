"""Image formation of a synthetic oocyte from its layout, with the embryo renderer's optics.

The specimen is an optical path map ``opl`` (um of path excess) and an absorption map, as in
:mod:`blastoseg.synth.optics`; the zona, the polar body, cumulus remnants and debris are the
embryo renderer's own (:mod:`blastoseg.synth.artefacts`), the noise, gamma and JPEG of its
wide appearance (:mod:`blastoseg.synth.appearance`) and the holding-pipette shadow of its
incubator frames (:mod:`blastoseg.synth.incubator`). What is new here is the ooplasm and its
abnormalities:

* ooplasm: a sphere of index excess ``ooplasm_dn`` with fine granularity (``granules``);
* inclusions: small dense spots (high path and absorption: dark in brightfield, a strong
  bright/dark pair in relief), the larger ones refractile bodies;
* vacuoles: clear fluid spheres: the ooplasm's path is removed and its granules with it, a
  thin rim remains;
* SER clusters: flat smooth discs: granules gone, a slightly lower path, no rim;
* central granularity: coarser, darker granules in a central patch (a texture, not a class).

Two contrasts (:data:`~blastoseg.synth.oocyte.config.CONTRASTS`): Hoffman relief
(:func:`~blastoseg.synth.optics.relief_image`) and the brightfield of an inverted microscope
(absorption plus the transport-of-intensity defocus term of
:func:`blastoseg.synth.brightfield.optics.tie_intensity`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blastoseg.synth import appearance as app
from blastoseg.synth import artefacts as art
from blastoseg.synth import optics
from blastoseg.synth.brightfield.optics import tie_intensity
from blastoseg.synth.incubator import pipette_shadow
from blastoseg.synth.oocyte.config import OocyteConfig
from blastoseg.synth.oocyte.layout import Blob, OocyteLayout

__all__ = ["render_layout"]

WAVELENGTH_UM = 0.55


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _chord(blob: Blob, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Thickness (px) of the ellipsoid whose outline is ``blob`` (its z semi-axis = b)."""
    q = blob.inside(yy, xx)
    return 2.0 * blob.b * np.sqrt(np.clip(1.0 - q, 0.0, None))


def _centred_patch(canvas_map: np.ndarray, shape: tuple[int, int], centre) -> np.ndarray:
    """A square map computed around the oocyte's centre, placed into a frame-size map."""
    out = np.zeros(shape, np.float32)
    half = canvas_map.shape[0] // 2
    optics.add_patch(out, canvas_map, int(round(centre[0])) - half,
                     int(round(centre[1])) - half)
    return out


def _specimen(lay: OocyteLayout, cfg: OocyteConfig, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(opl_um, absorb)`` of the oocyte and what lies around it."""
    shape, um = lay.shape, lay.px_um
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dn = _u(rng, cfg.ooplasm_dn)
    plasm = lay.shell(lay.r_ooplasm)
    chord = _chord(plasm, yy, xx)
    grain = optics.granules(rng, shape, _u(rng, cfg.granule_size_px), 0.02)
    grain_w = np.full(shape, _u(rng, cfg.granularity), np.float32)
    absorb = np.zeros(shape, np.float32)
    cut = np.zeros(shape, np.float32)  # ooplasm path replaced by fluid (vacuoles)
    if lay.granular_centre is not None:
        g = np.clip(1.0 - lay.granular_centre.inside(yy, xx), 0, 1) ** 0.5
        coarse = optics.granules(rng, shape, 2.5 * _u(rng, cfg.granule_size_px), 0.05)
        grain = grain + 1.5 * g * coarse
        absorb += 0.12 * g * (chord > 0)
    for b in lay.vacuoles + lay.ser:
        inside = np.clip(1.0 - b.inside(yy, xx), 0, 1) ** 0.3
        grain_w *= 1.0 - 0.95 * inside
    for b in lay.vacuoles:  # clear fluid: path and absorption of the ooplasm gone, a rim
        cut += 0.95 * _chord(Blob(b.y, b.x, b.a, b.b, b.angle), yy, xx)
        rim = np.exp(-0.5 * ((np.sqrt(b.inside(yy, xx)) - 1.0) * b.b / 1.0) ** 2)
        absorb += rng.uniform(0.15, 0.35) * rim
        absorb -= rng.uniform(0.08, 0.2) * (b.inside(yy, xx) < 0.8)
    for b in lay.ser:  # a flat smooth disc: less path, slightly clearer, no rim
        cut += 0.2 * _chord(Blob(b.y, b.x, b.a, b.b, b.angle), yy, xx)
        absorb -= rng.uniform(0.04, 0.12) * np.clip(1.0 - b.inside(yy, xx), 0, 1) ** 0.5
    opl = dn * um * np.clip(chord * (1.0 + grain_w * grain) - cut, 0, None)
    absorb += _u(rng, cfg.absorb_ooplasm) * chord / max(2 * lay.r_ooplasm, 1.0) * (
        1.0 + 0.5 * grain_w * grain)
    for b in lay.inclusions:
        c = _chord(b, yy, xx)
        opl += rng.uniform(0.06, 0.15) * um * c
        absorb += rng.uniform(0.5, 1.2) * np.clip(c / max(2 * b.b, 1.0), 0, 1) ** 0.5
    # the zona and the polar body: the embryo renderer's shell and blobs
    canvas = int(2 * np.ceil(lay.r_zona_out) + 12) | 1
    z_opl, z_abs = art.zona_opl(canvas, lay.r_zona_out, lay.r_zona_in, lay.ellipticity,
                                lay.angle, rng, 0.3)
    opl += _centred_patch(z_opl * 0.012 * um, shape, lay.centre)
    # the zona scatters a little: a faint grey band in brightfield, as in clinic images
    z_scatter = rng.uniform(0.03, 0.12) * z_opl / max(float(z_opl.max()), 1e-6)
    absorb += _centred_patch(z_abs + z_scatter, shape, lay.centre)
    for b in lay.polar_bodies:  # granular and darker than the medium, like the ooplasm
        blob = art.blob(b.b, rng, 0.25, 0.12)
        y0, x0 = int(round(b.y)) - blob.shape[0] // 2, int(round(b.x)) - blob.shape[1] // 2
        optics.add_patch(opl, blob * dn * um * rng.uniform(0.9, 1.3), y0, x0)
        optics.add_patch(absorb, rng.uniform(0.1, 0.3) * blob / max(float(blob.max()), 1e-6),
                         y0, x0)
    n_debris = int(round(_u(rng, cfg.debris)))
    clusters = int(rng.integers(1, 4)) if rng.random() < cfg.cumulus_prob else 0
    if clusters or n_debris:
        big = int(2 * np.ceil(lay.r_zona_out * 1.35) + 12) | 1
        cum = art.cumulus_opl(big, lay.r_zona_out, clusters, n_debris, um, rng)
        opl += _centred_patch(cum * 0.015 * um, shape, lay.centre)
    return opl.astype(np.float32), absorb.astype(np.float32)


def render_layout(lay: OocyteLayout, cfg: OocyteConfig, rng: np.random.Generator
                  ) -> tuple[np.ndarray, dict]:
    """The (H, W) uint8 image of a layout, and the draws that made it (JSON-able)."""
    contrast = cfg.contrast
    if contrast == "mixed":
        contrast = "hoffman" if rng.random() < cfg.hoffman_fraction else "inverted"
    opl, absorb = _specimen(lay, cfg, rng)
    bg = _u(rng, cfg.background_level)
    bg_tex = 1.0 + 0.01 * optics.smooth_noise(rng, lay.shape, 6.0)
    if contrast == "hoffman":
        angle = float(rng.uniform(0, 2 * np.pi))
        img = optics.relief_image(opl, absorb, angle, _u(rng, cfg.relief_gain), bg,
                                  halo_sigma=3.0 / lay.px_um, halo=float(rng.uniform(0.0, 0.8)))
        img = img * bg_tex
    else:
        k0 = 2 * np.pi / WAVELENGTH_UM
        rel = tie_intensity(k0 * opl, absorb, _u(rng, cfg.defocus_um), lay.px_um, WAVELENGTH_UM,
                           strength=float(rng.uniform(0.2, 0.6)))
        img = bg * bg_tex * rel
    img = ndi.gaussian_filter(img.astype(np.float32), _u(rng, cfg.blur_px))
    if rng.random() < cfg.vignetting_prob:
        img = img * art.vignette(lay.shape, rng, float(rng.uniform(0.05, 0.35)))
    pipette = rng.random() < cfg.pipette_prob
    if pipette:
        img = img * pipette_shadow(lay.shape, rng)
    img = optics.sensor_noise(img, rng, _u(rng, cfg.noise_sigma), _u(rng, cfg.shot_noise))
    gamma = float(np.clip(np.exp(rng.normal(0.0, cfg.gamma_sd)), 0.6, 1.7))
    img = np.clip(app.apply_gamma(img, gamma), 0, 255).astype(np.uint8)
    quality = int(rng.integers(30, 92)) if rng.random() < cfg.jpeg_prob else None
    img = app.jpeg(img, quality)
    return img, {"contrast": contrast, "gamma": round(gamma, 3), "jpeg_quality": quality,
                 "holding_pipette": bool(pipette), "background_level": round(bg, 1)}
