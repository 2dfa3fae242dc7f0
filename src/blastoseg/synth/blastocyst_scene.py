"""A blastocyst in a frame: the cleavage :class:`Scene` with its cells swapped for a blastocyst.

The frame (crop or incubator micro-well), the optics, the appearance draws, the illumination,
noise, text and JPEG are the cleavage scene's own, drawn from the same seed streams; only the
embryo canvas (zona, debris, cells) is replaced. The blastocyst's own draws come from a
separate stream, so adding it changed no cleavage frame.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blastoseg.instances import FrameInstances
from blastoseg.synth import artefacts as art
from blastoseg.synth import blastocyst as bl
from blastoseg.synth.config import BLASTOCYST_STAGES, EmbryoConfig
from blastoseg.synth.scene import Scene

# hours post insemination at which each sub-stage is typically seen (for the burned-in text)
_HOURS = {"early": (98.0, 108.0), "full": (104.0, 116.0), "expanded": (110.0, 124.0),
          "hatching": (116.0, 136.0)}


def _paste(canvas_mask: np.ndarray, shape: tuple[int, int], oy: int, ox: int) -> np.ndarray:
    """A canvas-sized mask placed at (oy, ox) in a frame of ``shape``, clipped."""
    out = np.zeros(shape, bool)
    h, w = shape
    ch, cw = canvas_mask.shape
    y0, x0, y1, x1 = max(0, oy), max(0, ox), min(h, oy + ch), min(w, ox + cw)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = canvas_mask[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return out


class BlastocystScene(Scene):
    """A sampled day 5-6 blastocyst; :meth:`render` gives the frame and its ground truth."""

    def __init__(self, seed: int, config: EmbryoConfig, sub_stage: str | None = None) -> None:
        super().__init__(seed, config, max_cells=1)
        cfg = config
        rng = np.random.default_rng([int(seed), 0xB1A5])
        if sub_stage is None:
            w = np.asarray(cfg.blastocyst_stage_weights, float)
            sub_stage = BLASTOCYST_STAGES[int(rng.choice(len(w), p=w / w.sum()))]
        elif sub_stage not in BLASTOCYST_STAGES:
            from blastoseg.errors import BlastosegError

            raise BlastosegError(f"blastocyst stage must be one of "
                                 f"{', '.join(BLASTOCYST_STAGES)}; got {sub_stage!r}")
        b = self.blastocyst = bl.sample_blastocyst(
            rng, sub_stage, self.r_zout, cfg.trophectoderm_cells, cfg.blastocyst_collapse_prob)
        self.px_um, self.r_zin, self.r0 = b.px_um, b.r_zin, b.te_r
        self.ellip, self.angle = b.ellip, b.angle
        self.z_focus = float(rng.uniform(-0.6, 0.6) * b.te_r)
        self.hours = float(rng.uniform(*_HOURS[sub_stage]))
        px = 1.0 / self.px_um
        reach = self.r_zout + (1.0 * b.bulge_r if b.hatch_angle is not None else 0.0)
        self.canvas = int(2 * (reach + 16 * px)) | 1  # embryo_circle() reads the canvas
        zopl, zabs = art.zona_opl(self.canvas, self.r_zout, self.r_zin, self.ellip,
                                  self.angle, rng, 0.08)
        breach = bl.zona_breach(self.canvas, b)
        zona_mask = bl.zona_mask(self.canvas, b, breach)
        zopl = ndi.gaussian_filter(zopl * breach, 1.2)  # the zona's faces are not sharp
        # day 5: cumulus is long gone; a few specks of debris remain
        cum = art.cumulus_opl(self.canvas, self.r_zout, int(rng.random() < 0.15),
                              int(rng.integers(0, 8)), self.px_um, rng)
        sign = self.look.membrane_sign if self.look is not None else 1.0
        cells, c_abs, masks = bl.blastocyst_maps(
            b, self.canvas, rng, gran=self.gran, gran_size=self.gran_size,
            mem_dark=self.mem_dark, mem_w=self.mem_w, membrane_sign=sign,
            z_focus=self.z_focus, depth_blur=self.depth_blur, under_w=self.under_w)
        self.static_opl = self.px_um * (cfg.zona_dn * zopl + 0.02 * cum
                                        + cfg.cytoplasm_dn * cells)
        # half a blastomere's absorption: the ICM is dense but not dark (flat TE barely absorbs)
        self.zona_abs = (zabs * breach + c_abs
                         + 0.5 * self.cyto_abs * cells * self.px_um / 100.0).astype(np.float32)
        self.canvas_masks = {"zona": zona_mask, **masks}

    def render(self, hours: float | None = None, flicker: float = 1.0
               ) -> tuple[np.ndarray, FrameInstances, dict]:
        """The frame, zero blastomere instances, and the metadata (components in ``masks``)."""
        hours = self.hours if hours is None else float(hours)
        opl, absorb, oy, ox = self._embryo_fixed_maps()
        image = self._finish(opl, absorb, hours, flicker)
        h, w = self.shape
        self.masks = {k: _paste(m, self.shape, oy, ox) for k, m in self.canvas_masks.items()}
        b = self.blastocyst
        cx, cy, _ = self.embryo_circle()
        icm = b.icm_center[:2] + b.te_xy
        meta = {"n_cells": None, "count_applicable": False, "hours": round(hours, 2),
                "embryo_circle": self.embryo_circle(),
                "blastocyst_stage": b.stage, "collapsed": b.collapsed,
                "hatching": b.hatch_angle is not None,
                "trophectoderm_cells": int(len(b.te_sites)),
                "trophectoderm_radius_px": round(float(b.te_r), 2),
                "blastocoel_radius_px": round(float(b.cavity_r), 2),
                "icm_cells": len(b.icm_cells),
                "icm_center_xy": [round(float(cx + icm[0]), 2), round(float(cy + icm[1]), 2)]}
        inst = FrameInstances(masks=np.zeros((0, h, w), bool),
                              visible_masks=np.zeros((0, h, w), bool),
                              occlusion=np.zeros((h, w), np.float32),
                              track_ids=np.zeros(0, np.int64), meta=dict(meta))
        return image, inst, meta
