"""One synthetic brightfield scene of adherent cells: phase, two focal planes and ground truth.

>>> from blastoseg.synth.brightfield import BrightfieldConfig, render_brightfield
>>> scene = render_brightfield(0, BrightfieldConfig().for_size(128))
>>> scene.planes.shape
(2, 128, 128)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
from blastoseg.synth.brightfield import optics as opt
from blastoseg.synth.brightfield.cells import CellPatch, Placer, make_cell, uniform
from blastoseg.synth.brightfield.config import BrightfieldConfig

GENERATOR = "blastoseg.synth.brightfield"

#: ``translator(phase float32 (H, W), rng) -> float32 (2, H, W)`` (e.g. a pix2pix model)
Translator = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass
class BrightfieldScene:
    """A rendered (or copy-pasted) scene.

    Attributes
    ----------
    phase
        float32 (H, W) phase delay in radians (the cells' summed optical path x k0).
    planes
        float32 (2, H, W) brightfield focal planes in grey levels (uint16 range): plane 0
        below focus, plane 1 above (opposite contrast at cell edges).
    instances
        Amodal cell masks (category 1); ``occlusion`` is the overlap ground truth.
    nuclei
        uint16 (H, W) nucleus labels: ``i + 1`` is the nucleus of instance ``i``.
    border
        bool (H, W): the one-pixel inner outline of every cell (amodal, so also under others).
    overlap
        bool (H, W): pixels inside two or more cells.
    absorbance
        float32 (H, W) absorbance of the specimen (not written to datasets).
    meta
        JSON-able scene description (seed, source, optics, per-cell overlap ratios, ...).
    cells
        The per-cell patches the scene is the sum of (the source of copy-paste).
    """

    phase: np.ndarray
    planes: np.ndarray
    instances: FrameInstances
    nuclei: np.ndarray
    border: np.ndarray
    overlap: np.ndarray
    absorbance: np.ndarray
    meta: dict = field(default_factory=dict)
    cells: list[CellPatch] = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.phase.shape  # type: ignore[return-value]


def compose_scene(shape: tuple[int, int], cells: Sequence[CellPatch], rng: np.random.Generator,
                  config: BrightfieldConfig, meta: dict,
                  translator: Translator | None = None) -> BrightfieldScene:
    """Sum placed cell patches into a scene and form its focal planes.

    Phase and absorbance add over cells (and the slide's own faint texture and debris);
    the planes come from ``translator(phase, rng)`` if given, else from the physical model
    of :mod:`.optics`.
    """
    h, w = shape
    n = len(cells)
    phase, absorb = opt.background_layers(rng, config, shape)
    masks = np.zeros((n, h, w), dtype=bool)
    nuclei = np.zeros(shape, dtype=np.uint16)
    border = np.zeros(shape, dtype=bool)
    for i, c in enumerate(cells):
        c.add_to(phase, "phase")
        c.add_to(absorb, "absorbance")
        sl = c.frame_slices(shape)
        if sl is None:  # placement guarantees pixels in the frame; be safe anyway
            continue
        masks[i][sl[0]] = c.mask[sl[1]]
        nuclei[sl[0]][c.nucleus[sl[1]]] = i + 1
        outline = c.mask & ~ndi.binary_erosion(c.mask)
        border[sl[0]] |= outline[sl[1]]
    overlap = masks.sum(axis=0) >= 2
    optics = opt.sample_optics(rng, config, shape)
    if translator is None:
        planes = opt.form_planes(phase, absorb, optics, rng)
    else:
        planes = np.asarray(translator(phase.astype(np.float32), rng), dtype=np.float32)
        if planes.shape != (2, h, w) or not np.all(np.isfinite(planes)):
            raise BlastosegError(f"the translator must return finite float (2, {h}, {w}) "
                                 f"brightfield planes; got {planes.shape}")
    meta = {**meta, "n_cells": n, "pixel_size_um": float(config.pixel_size_um),
            "generator": GENERATOR}
    if translator is None:
        meta.update(optics.meta())
    instances = FrameInstances(masks=masks, occlusion=overlap.astype(np.float32),
                               meta=dict(meta))
    return BrightfieldScene(phase=phase.astype(np.float32), planes=planes, instances=instances,
                            nuclei=nuclei, border=border, overlap=overlap,
                            absorbance=absorb.astype(np.float32), meta=meta, cells=list(cells))


def render_brightfield(seed: int, config: BrightfieldConfig | None = None) -> BrightfieldScene:
    """Render one scene of adherent cells from a seed (deterministic).

    Cells are sampled one by one (:func:`.cells.make_cell`) and placed so that each new
    cell's overlap ratio with the cells already there stays in ``config.overlap``; a cell
    that finds no such place within ``config.placement_tries`` is dropped. The phase image
    is the sum of the cells' phase delays; the two brightfield planes follow from the
    transport-of-intensity model (:mod:`.optics`).
    """
    cfg = config if config is not None else BrightfieldConfig()
    placer, s_img = place_random_cells(seed, cfg)
    meta = {"seed": int(seed), "source": "render",
            "overlap_ratios": [round(r, 4) for r in placer.ratios]}
    return compose_scene(cfg.image_size, placer.placed, np.random.default_rng(s_img), cfg, meta)


def sample_cells(seed: int, config: BrightfieldConfig) -> list[CellPatch]:
    """The cells :func:`render_brightfield` draws for ``seed``, unplaced (the scene shows
    those of them that found a place)."""
    s_cells = np.random.SeedSequence(int(seed)).spawn(3)[0]
    rng = np.random.default_rng(s_cells)
    n = max(1, int(round(uniform(rng, config.n_cells))))
    return [make_cell(rng, config) for _ in range(n)]


def place_random_cells(seed: int, config: BrightfieldConfig
                       ) -> tuple[Placer, np.random.SeedSequence]:
    """The placed cells of :func:`render_brightfield`, and the seed of its image."""
    _, s_place, s_img = np.random.SeedSequence(int(seed)).spawn(3)
    placer = Placer(config.image_size, config)
    rng = np.random.default_rng(s_place)
    for cell in sample_cells(seed, config):
        placer.try_place(rng, cell)
    return placer, s_img
