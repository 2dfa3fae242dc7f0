"""Copy-paste synthesis in the phase domain (thesis section 4.4.1).

Cells are cut from phase scenes together with their masks (and nuclei), randomly resized,
rotated, mirrored, shifted and elastically deformed (a smooth random displacement field
applied with ``scipy.ndimage.map_coordinates``), then pasted ADDITIVELY into a new phase
image: overlapping cells stack along the optical axis, so their phase delays add, as in the
renderer. The pasted phase is weighted by the Gaussian-blurred mask so no hard seam is
pasted. Each new cell's position is chosen so that its overlap ratio with the cells already
pasted stays in ``config.overlap`` (default [0, 0.2]; see :mod:`.cells` for the exact rule).

The brightfield planes of the new scene come from a translator (the pix2pix model of
section 4.4.2, ``translator(phase, rng) -> (2, H, W)``) when one is given, else from the
physical model of :mod:`.optics` (then absorbance patches travel with the phase patches).

Interpretation: the thesis cuts cells from phase images; when a scene's per-cell patches
are known (our renders) they are used as the cut-outs, which avoids carrying a neighbour's
phase into a cut-out where two cells overlap. :func:`cut_cells` cuts from any phase image
with instance masks (the neighbour's share is then included, as in the thesis).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
from blastoseg.synth.brightfield.cells import CellPatch, Placer, uniform
from blastoseg.synth.brightfield.config import BrightfieldConfig
from blastoseg.synth.brightfield.scene import (
    BrightfieldScene,
    Translator,
    compose_scene,
    sample_cells,
)


def cut_cells(phase: np.ndarray, instances: FrameInstances, nuclei: np.ndarray | None = None,
              absorbance: np.ndarray | None = None, pad: int = 3) -> list[CellPatch]:
    """Cut every instance out of a phase image (phase x mask, background level removed).

    ``nuclei`` is a label image (label ``i + 1`` = nucleus of instance ``i``) or a boolean
    nucleus mask (then each cell gets the nucleus pixels inside it).
    """
    phase = np.asarray(phase, dtype=np.float32)
    if phase.shape != instances.shape:
        raise BlastosegError(f"phase image {phase.shape} and instance masks "
                             f"{instances.shape} differ in size")
    union = instances.masks.any(axis=0) if len(instances) else np.zeros(phase.shape, bool)
    level = float(np.median(phase[~union])) if (~union).any() else 0.0
    out = []
    for i, m in enumerate(instances.masks):
        ys, xs = np.nonzero(m)
        if not len(ys):
            continue
        y0, y1 = max(0, ys.min() - pad), min(phase.shape[0], ys.max() + pad + 1)
        x0, x1 = max(0, xs.min() - pad), min(phase.shape[1], xs.max() + pad + 1)
        mask = m[y0:y1, x0:x1]
        if nuclei is None:
            nuc = np.zeros_like(mask)
        elif nuclei.dtype == bool:
            nuc = nuclei[y0:y1, x0:x1] & mask
        else:
            nuc = (nuclei[y0:y1, x0:x1] == i + 1) & mask
        ab = (np.zeros_like(mask, dtype=np.float32) if absorbance is None
              else absorbance[y0:y1, x0:x1] * mask)
        out.append(CellPatch(mask=mask.copy(), nucleus=nuc,
                             phase=np.clip(phase[y0:y1, x0:x1] - level, 0, None) * mask,
                             absorbance=ab.astype(np.float32), y0=int(y0), x0=int(x0)))
    return out


def scene_cells(scene: BrightfieldScene) -> list[CellPatch]:
    """The cut-outs of a scene: its exact per-cell patches when known, else :func:`cut_cells`."""
    if scene.cells:
        return list(scene.cells)
    return cut_cells(scene.phase, scene.instances, scene.nuclei, scene.absorbance)


def smooth_field(rng: np.random.Generator, size: int, sigma: float, amplitude: float
                 ) -> np.ndarray:
    """(size, size) smooth random displacement (px), max |d| = ``amplitude``: white noise
    Gaussian-filtered with width ``sigma``, computed on a 4x coarser grid and upsampled
    bilinearly (the field is smooth on that scale anyway, and large patches stay cheap)."""
    f = 4 if sigma >= 8 else 2 if sigma >= 4 else 1
    n = -(-size // f) + 1
    d = ndi.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), sigma / f)
    if f > 1:
        d = ndi.zoom(d, f, order=1, mode="nearest")
    d = d[:size, :size]
    return d * (amplitude / (np.abs(d).max() + 1e-8))


def transform_cell(cell: CellPatch, rng: np.random.Generator,
                   config: BrightfieldConfig) -> CellPatch:
    """Randomly resize, rotate, mirror and elastically deform a cut-out (one resampling).

    Output pixel ``q`` reads the source at ``R^-1 (q - c_out) / s + c_src + d(q)`` with a
    random rotation/mirror ``R``, scale ``s`` and a smooth displacement field ``d``
    (smooth noise, correlation length ``paste_elastic_sigma``, amplitude
    ``paste_elastic_alpha`` pixels). The phase is then weighted by the Gaussian-blurred mask.
    """
    cfg = config
    scale = uniform(rng, cfg.paste_scale)
    angle = rng.uniform(0, 2 * np.pi)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    alpha = uniform(rng, cfg.paste_elastic_alpha)
    sigma = uniform(rng, cfg.paste_elastic_sigma)
    ys, xs = np.nonzero(cell.mask)
    c_src = np.array([ys.mean(), xs.mean()])
    half = np.ceil(np.hypot(*cell.shape) * 0.5 * scale + alpha + 2 * cfg.paste_edge_blur_px) + 2
    size = int(2 * half + 1)
    qy, qx = np.mgrid[0:size, 0:size].astype(np.float32) - half
    c, s = np.cos(angle), np.sin(angle)
    sy = (c * qy - s * qx) / scale
    sx = mirror * (s * qy + c * qx) / scale
    field = [smooth_field(rng, size, sigma, alpha) for _ in range(2)]
    coords = np.stack([sy + c_src[0] + field[0], sx + c_src[1] + field[1]])

    def warp(img: np.ndarray, order: int = 1) -> np.ndarray:
        return ndi.map_coordinates(img.astype(np.float32), coords, order=order, mode="constant",
                                   cval=0.0)

    mask = warp(cell.mask) > 0.5
    if not mask.any():  # degenerate warp (a tiny cut-out): paste it unchanged
        return replace(cell, y0=0, x0=0, info=dict(cell.info))
    nucleus = (warp(cell.nucleus) > 0.5) & ndi.binary_erosion(mask)
    soft = ndi.gaussian_filter(mask.astype(np.float32), cfg.paste_edge_blur_px)
    phase = warp(cell.phase) * soft
    absorb = warp(cell.absorbance) * soft
    # crop to the mask (plus a margin for the blurred edge)
    m = int(np.ceil(3 * cfg.paste_edge_blur_px)) + 1
    yy, xx = np.nonzero(mask)
    y0, y1 = max(0, yy.min() - m), min(size, yy.max() + m + 1)
    x0, x1 = max(0, xx.min() - m), min(size, xx.max() + m + 1)
    crop = (slice(y0, y1), slice(x0, x1))
    return CellPatch(mask=mask[crop], nucleus=nucleus[crop], phase=phase[crop].astype(np.float32),
                     absorbance=absorb[crop].astype(np.float32),
                     info={**cell.info, "scale": scale, "angle_deg": float(np.degrees(angle)),
                           "mirror": bool(mirror < 0)})


def copy_paste_scene(pool: Sequence[CellPatch], seed: int,
                     config: BrightfieldConfig | None = None,
                     translator: Translator | None = None,
                     n_cells: int | None = None) -> BrightfieldScene:
    """Build a new scene by pasting transformed cells drawn from ``pool`` (deterministic).

    Parameters
    ----------
    pool
        Cut-outs to draw from (with replacement), e.g. :func:`scene_cells` of a few scenes.
    seed
        Seed of the draws, transforms, placement and (physical model) optics.
    config
        Frame size, cell count range, overlap range and copy-paste knobs.
    translator
        ``translator(phase, rng) -> float32 (2, H, W)`` making the brightfield planes (the
        pix2pix model); None uses the physical model of :mod:`.optics`.
    n_cells
        Cells to try to paste; default drawn from ``config.n_cells``.
    """
    cfg = config if config is not None else BrightfieldConfig()
    if not pool:
        raise BlastosegError("copy-paste needs at least one cell to cut; the source scenes "
                             "have none")
    s_geo, s_img = np.random.SeedSequence(int(seed)).spawn(2)
    rng = np.random.default_rng(s_geo)
    n = int(n_cells) if n_cells is not None else max(1, int(round(uniform(rng, cfg.n_cells))))
    placer = Placer(cfg.image_size, cfg)
    for _ in range(n):
        src = pool[int(rng.integers(len(pool)))]
        placer.try_place(rng, transform_cell(src, rng, cfg))
    meta = {"seed": int(seed),
            "source": "copy_paste" if translator is None else "copy_paste+pix2pix",
            "overlap_ratios": [round(r, 4) for r in placer.ratios]}
    return compose_scene(cfg.image_size, placer.placed, np.random.default_rng(s_img), cfg, meta,
                         translator=translator)


def render_copy_paste(seed: int, config: BrightfieldConfig | None = None,
                      translator: Translator | None = None,
                      sources: Sequence[BrightfieldScene] | None = None) -> BrightfieldScene:
    """A copy-paste scene from ``sources`` (default: ``config.paste_sources`` scenes rendered
    from seeds derived from ``seed``, so the result depends on ``seed`` alone)."""
    cfg = config if config is not None else BrightfieldConfig()
    if sources is None:
        seeds = np.random.default_rng(
            np.random.SeedSequence([int(seed), 0xC0FFEE])).integers(0, 2**31 - 1,
                                                                     max(1, cfg.paste_sources))
        # the cells render_brightfield(s) draws, as cut-outs (placing them and forming
        # their images would not change the patches, so that work is skipped)
        pool = [c for s in seeds for c in sample_cells(int(s), cfg)]
    else:
        pool = [c for sc in sources for c in scene_cells(sc)]
    return copy_paste_scene(pool, seed, cfg, translator=translator)
